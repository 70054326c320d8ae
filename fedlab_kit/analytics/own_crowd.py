"""A party's own crowd per H3 cell, released with differential privacy.

Used by a visit holder (operator, map provider) on its own data, e.g. to show where its
visitors are before any joint analysis. Each person counts in at most ``max_cells`` cells,
once per cell (:func:`~fedlab_kit.dp.bound_contributions`), so the L1 sensitivity of the
cell counts is ``max_cells``. The cells released are the *keys* given by the caller (e.g.
every cell of the city), so the set of cells itself reveals nothing about the data.
"""

from __future__ import annotations

from collections.abc import Sequence

import h3
import numpy as np
import pandas as pd

from ..dp import PrivacyLedger, bound_contributions, release_counts
from ..dp.bounding_bias import BOUNDING_SHARE, corrected_frame, release_bounding_loss
from ..dp.errors import DPError
from ..dp.mechanisms import check_share


def cells_of(lat: pd.Series, lon: pd.Series, resolution: int) -> pd.Series:
    """H3 cell of each point; raises with the count of rows that are out of range or missing."""
    bad = lat.isna() | lon.isna() | ~lat.between(-90, 90) | ~lon.between(-180, 180)
    if bad.any():
        raise DPError(f"{int(bad.sum())} rows have a latitude/longitude that is missing or "
                      "out of range; drop or fix them first")
    return pd.Series([h3.latlng_to_cell(a, b, resolution) for a, b in
                      zip(lat.to_numpy(), lon.to_numpy(), strict=True)], index=lat.index)


def release_own_crowd(
    visits: pd.DataFrame, ledger: PrivacyLedger, *, keys: Sequence[str], epsilon: float,
    person_col: str = "user_id", cell_col: str = "h3", max_cells: int = 5,
    suppress_below: int = 10, seed: int | None = None,
    bounding_share: float = BOUNDING_SHARE,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """DP count of distinct persons per cell of ``keys``, ``epsilon`` in all.

    Returns (cells frame with ``h3, count, ci_low, ci_high, dp_noise, bounding_added,
    suppressed, suppressed_because``, bounding report). Counts and intervals are corrected
    for what bounding removed (a ``bounding_share`` of epsilon pays for the estimate; see
    :mod:`fedlab_kit.dp.bounding_bias`). Visits to cells outside ``keys`` are dropped and
    counted in the report.
    """
    share = check_share(bounding_share, "bounding_share")
    if not keys:
        raise DPError("no cells to release: pass the cells of the area as keys")
    missing = [c for c in (person_col, cell_col) if c not in visits.columns]
    if missing:
        raise DPError(f"visits have no column(s) {missing}; columns: {list(visits.columns)}")
    key_index = pd.Index(list(dict.fromkeys(keys)))
    inside = visits[cell_col].isin(key_index)
    bounded, report = bound_contributions(visits[inside], person_col, cell_col,
                                          max_keys=max_cells, seed=seed)
    report = {**report, "rows_outside_keys": int((~inside).sum())}
    true = bounded[cell_col].value_counts().reindex(key_index, fill_value=0).to_numpy()
    query = f"own crowd per cell ({len(key_index)} cells)"
    ledger.require(query, epsilon)  # both parts, before the first is spent
    pairs = visits[inside].dropna(subset=[person_col]).drop_duplicates(
        [person_col, cell_col])[person_col]
    loss = release_bounding_loss(ledger, query, pairs, max_cells, epsilon * share)
    release = release_counts(ledger, query, true, epsilon * (1 - share),
                             sensitivity=max_cells,
                             meta={"max_cells": max_cells, "cells": len(key_index)})
    frame = corrected_frame(cell_col, list(key_index), np.asarray(release.values),
                            release.ci_halfwidth, loss, suppress_below, epsilon)
    report["bounding_loss"] = loss.loss
    return frame, report
