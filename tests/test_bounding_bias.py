"""Crowd intervals cover the *unbounded* truth: bounding's bias is estimated and corrected.

Binomial bounds, not hand-picked margins: with 95 % intervals the misses among ``n``
independent-ish cells are about Bin(n, 0.05); the thresholds sit 4 standard deviations away.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedlab_kit.analytics import release_own_crowd
from fedlab_kit.dp import PrivacyLedger
from fedlab_kit.dp.bounding_bias import (
    MAX_LOSS,
    BoundingLoss,
    corrected_counts,
    loss_from_totals,
    pair_totals,
)

CELLS, PERSONS, SEEDS = 200, 60_000, (1, 2, 3)  # enough pairs that the loss is significant


def _city(seed: int) -> pd.DataFrame:
    """Persons visit 1..20 distinct cells (mean 3.5, 11 % above 5), cells uniformly."""
    rng = np.random.default_rng(seed)
    per = np.minimum(1 + rng.poisson(2.5, PERSONS), 20)
    person = np.repeat(np.arange(PERSONS), per)
    cell = np.concatenate([rng.choice(CELLS, k, replace=False) for k in per])
    return pd.DataFrame({"user_id": person, "h3": [f"c{c:03d}" for c in cell]})


def _misses(frame: pd.DataFrame, visits: pd.DataFrame, keys: list[str]) -> int:
    true = visits.groupby("h3")["user_id"].nunique().reindex(keys, fill_value=0).to_numpy()
    return int((~((frame["ci_low"] <= true) & (true <= frame["ci_high"]))).sum())


def _limit(n: int, p: float = 0.05, sds: float = 4.0) -> float:
    return n * p + sds * math.sqrt(n * p * (1 - p))


def test_intervals_cover_the_unbounded_crowd(tmp_path: Path) -> None:
    keys = [f"c{c:03d}" for c in range(CELLS)]
    corrected = uncorrected = 0
    for seed in SEEDS:
        visits = _city(seed)
        ledger = PrivacyLedger(tmp_path / f"{seed}.sqlite", total_epsilon=2.0)
        frame, report = release_own_crowd(visits, ledger, keys=keys, epsilon=1.0, seed=seed)
        corrected += _misses(frame, visits, keys)
        assert 0.02 < report["bounding_loss"] < 0.12
        plain, _ = release_own_crowd(visits, ledger, keys=keys, epsilon=1.0, seed=seed,
                                     bounding_share=0.0)
        uncorrected += _misses(plain, visits, keys)
        assert ledger.remaining().epsilon == pytest.approx(0.0, abs=1e-9)
    n = CELLS * len(SEEDS)
    assert corrected <= _limit(n), (corrected, n)
    # the control: intervals for the bounded count alone miss the crowd far more often
    assert uncorrected > _limit(n), (uncorrected, n)


def test_both_parts_are_on_the_ledger(tmp_path: Path) -> None:
    visits, keys = _city(4), [f"c{c:03d}" for c in range(CELLS)]
    ledger = PrivacyLedger(tmp_path / "l.sqlite", total_epsilon=1.0)
    release_own_crowd(visits, ledger, keys=keys, epsilon=1.0, bounding_share=0.1)
    spent = ledger.releases().sort_values("id")
    assert list(spent["epsilon"].round(9)) == [0.1, 0.9]
    assert spent["query"].iloc[0].endswith("pairs removed by bounding")


def test_pair_totals_and_loss() -> None:
    pairs = pd.Series(["a"] * 7 + ["b"] * 2 + ["c"] * 30)  # 7, 2 and 30 (capped: 20) keys
    totals = pair_totals(pairs, max_keys=5)
    assert list(totals) == [5 + 2 + 5, 2 + 0 + 15]
    assert loss_from_totals(np.array([24, 5]), 5) == pytest.approx(5 / 29)
    assert loss_from_totals(totals, 5) == MAX_LOSS  # 17 / 29 is clamped
    assert loss_from_totals(np.array([0, 0]), 5) == 0.0
    assert loss_from_totals(np.array([100, -7]), 5) == 0.0  # noise may go negative
    # a removed count within the noise bound is noise: no correction
    assert loss_from_totals(np.array([600, 300]), 5, noise=2763.0) == 0.0
    assert loss_from_totals(np.array([60000, 4000]), 5, noise=2763.0) == pytest.approx(
        4000 / 64000)


def test_no_bounding_no_correction_in_a_small_population(tmp_path: Path) -> None:
    """300 persons in 2 cells each, none truncated: the loss estimate is all noise (scale
    400 against 600 pairs) and must not scale the counts up (it did by 1.2x in one CI run)."""
    visits = pd.DataFrame({"user_id": [f"u{i}" for i in range(300)] * 2,
                           "h3": [f"c{i % 7:03d}" for i in range(600)]})
    keys = [f"c{c:03d}" for c in range(7)]
    losses = []
    for run in range(40):
        ledger = PrivacyLedger(tmp_path / f"{run}.sqlite", total_epsilon=1.0)
        frame, report = release_own_crowd(visits, ledger, keys=keys, epsilon=1.0, seed=run)
        losses.append(report["bounding_loss"])
        assert (frame["bounding_added"] == 0).all() or report["bounding_loss"] > 0
    assert losses.count(0.0) >= 38  # a false correction has probability ~0.001 per run


def test_corrected_counts_bracket_the_bounded_and_scaled_values() -> None:
    loss = BoundingLoss(0.1, 5, 0.05)
    count, low, high = corrected_counts(np.array([-3, 0, 100]), 15, loss)
    assert list(count) == [0, 0, round(100 / 0.9)]
    assert list(low) == [0, 0, 85]
    assert high[2] == math.floor(115 / 0.8) and (high >= count).all()
