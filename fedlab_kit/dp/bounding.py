"""Contribution bounding: cap what one person can add to per-key counts before noising.

After :func:`bound_contributions` with ``max_keys=k`` each person has at most one row per
key and rows for at most ``k`` keys, so adding or removing one person changes a vector of
per-key row counts by at most 1 in at most ``k`` cells: L1 sensitivity ``k``
(:func:`sensitivity_for`) and L2 sensitivity ``sqrt(k)`` (:func:`l2_sensitivity_for`).

Which keys a person keeps is pseudo-random but *stable*: it depends only on that person's
own (person, key) values, the column dtypes and the seed, never on other people's rows.
That is what the sensitivity argument needs (a global shuffle would let one person's
presence change which keys everyone else keeps).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from fedlab_kit.dp.errors import DPError


def _check_max_keys(max_keys: int) -> int:
    if isinstance(max_keys, bool) or not isinstance(max_keys, (int, np.integer)) or max_keys < 1:
        raise DPError(f"max_keys must be a whole number >= 1, got {max_keys!r}")
    return int(max_keys)


def sensitivity_for(max_keys: int) -> int:
    """L1 sensitivity of per-key counts after bounding to ``max_keys`` keys per person."""
    return _check_max_keys(max_keys)


def l2_sensitivity_for(max_keys: int) -> float:
    """L2 sensitivity of per-key counts after bounding (for the Gaussian mechanism)."""
    return math.sqrt(_check_max_keys(max_keys))


def _hash_key(seed: int | np.random.Generator | None) -> str:
    """A 16-character hash key for pandas' row hashing, drawn from a seeded Generator."""
    return np.random.default_rng(seed).bytes(8).hex()


def _keep_positions(pairs: pd.DataFrame, max_keys: int,
                    seed: int | np.random.Generator | None) -> np.ndarray:
    """Positions (into ``pairs``) of at most ``max_keys`` pseudo-randomly ranked rows per
    person; ``pairs`` has the person and key columns, without duplicate pairs."""
    rank = pd.util.hash_pandas_object(pairs, index=False, hash_key=_hash_key(seed)).to_numpy()
    order = np.argsort(rank, kind="stable")
    codes, _ = pd.factorize(pairs.iloc[:, 0])
    ranked_codes = pd.Series(codes[order])
    within = ranked_codes.groupby(ranked_codes.to_numpy()).cumcount().to_numpy()
    return np.sort(order[within < max_keys])


def bound_contributions(frame: pd.DataFrame, person_col: str, key_col: str, *,
                        max_keys: int, seed: int | np.random.Generator | None = None
                        ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Keep at most one row per (person, key) and at most ``max_keys`` keys per person.

    Rows without a person id cannot be bounded and are dropped. For duplicate
    (person, key) rows the first one is kept. Returns the bounded frame (a subset of the
    input rows, in input order, original index) and a report of what was removed.
    """
    k = _check_max_keys(max_keys)
    if person_col == key_col:
        raise DPError("bound_contributions: person_col and key_col must differ")
    missing = [c for c in (person_col, key_col) if c not in frame.columns]
    if missing:
        raise DPError(f"bound_contributions: no column(s) {missing} in the frame")
    has_person = frame[person_col].notna().to_numpy()
    unique = ~frame.duplicated(subset=[person_col, key_col], keep="first").to_numpy()
    candidates = np.flatnonzero(has_person & unique)
    pairs = frame.iloc[candidates][[person_col, key_col]]
    kept = candidates[_keep_positions(pairs, k, seed)]
    out = frame.iloc[kept]
    persons_truncated = (pairs.iloc[:, 0].value_counts() > k).sum()
    report = {
        "rows_in": len(frame),
        "rows_out": len(out),
        "rows_missing_person": int((~has_person).sum()),
        "duplicate_rows_removed": int((has_person & ~unique).sum()),
        "rows_over_limit": len(candidates) - len(kept),
        "persons": int(pairs.iloc[:, 0].nunique()),
        "persons_truncated": int(persons_truncated),
        "max_keys": k,
    }
    return out, report
