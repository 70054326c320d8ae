"""A party's own DP crowd per H3 cell: counts, intervals, budget, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedlab_kit.analytics import release_own_crowd
from fedlab_kit.analytics.own_crowd import cells_of
from fedlab_kit.data import load_pois, load_sample_visits
from fedlab_kit.dp import BudgetExceeded, PrivacyLedger
from fedlab_kit.dp.errors import DPError


@pytest.fixture(scope="module")
def visits() -> tuple[pd.DataFrame, list[str]]:
    pois = load_pois()
    v = load_sample_visits().merge(pois[["poi_id", "h3_r8"]], on="poi_id")
    return v.rename(columns={"h3_r8": "h3"}), sorted(pois["h3_r8"].unique())


def test_released_counts_cover_the_truth(tmp_path: Path, visits) -> None:
    v, keys = visits
    ledger = PrivacyLedger(tmp_path / "l.sqlite", total_epsilon=1.5, party="operator")
    # a fifth of epsilon on the bounding estimate: the sample's ~3,900 removed pairs stand
    # far above its noise (at the default 5% they clear the 0.001 bound ~97% of the time)
    cells, report = release_own_crowd(v, ledger, keys=keys, epsilon=1.0, max_cells=5, seed=3,
                                      bounding_share=0.2)
    assert list(cells["h3"]) == keys and (cells["count"] >= 0).all()
    # the truth is unbounded: distinct persons per cell, however many cells they visit
    true = v.groupby("h3")["user_id"].nunique().reindex(keys, fill_value=0).to_numpy()
    inside = (cells["ci_low"] <= true) & (true <= cells["ci_high"])
    # each interval holds with probability >= 95%; 85% of 300 fails with p < 1e-9
    assert inside.mean() >= 0.85
    assert 0 < report["bounding_loss"] < 0.2 and (cells["bounding_added"] >= 0).all()
    assert ledger.remaining().epsilon == pytest.approx(0.5)
    with pytest.raises(BudgetExceeded):
        release_own_crowd(v, ledger, keys=keys, epsilon=1.0)
    assert ledger.remaining().epsilon == pytest.approx(0.5)


def test_small_cells_are_flagged(tmp_path: Path, visits) -> None:
    v, keys = visits
    ledger = PrivacyLedger(tmp_path / "l.sqlite", total_epsilon=5.0)
    # epsilon 4.5 (Laplace scale 5/4.5): an empty key's noise reaches 10 with p ~ 1e-4;
    # at epsilon 2 it did ~1% of the time and failed the run
    cells, _ = release_own_crowd(v, ledger, keys=[*keys, "8830982000fffff"], epsilon=4.5,
                                 suppress_below=10)
    noisy = cells["count"] - cells["bounding_added"]  # the bounded noisy count, >= 0
    assert (cells["suppressed"] == (noisy < 10)).all()
    assert set(cells.loc[cells["suppressed"], "suppressed_because"]) == {"noisy count below 10"}
    assert cells["suppressed"].iloc[-1]  # a key with no visits at all


def test_bad_input_is_refused(tmp_path: Path, visits) -> None:
    v, keys = visits
    ledger = PrivacyLedger(tmp_path / "l.sqlite", total_epsilon=5.0)
    with pytest.raises(DPError, match="no cells"):
        release_own_crowd(v, ledger, keys=[], epsilon=1.0)
    with pytest.raises(DPError, match="no column"):
        release_own_crowd(v.drop(columns="h3"), ledger, keys=keys, epsilon=1.0)
    with pytest.raises(DPError):
        release_own_crowd(v, ledger, keys=keys, epsilon=0.0)
    assert ledger.remaining().epsilon == 5.0
    lat = pd.Series([31.2, np.nan, 95.0])
    with pytest.raises(DPError, match="2 rows"):
        cells_of(lat, pd.Series([121.4, 121.4, 121.4]), 8)
