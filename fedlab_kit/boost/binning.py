"""Each party's own columns: checks, quantile bins (uint8 codes) and candidate tables.

A column is cut at up to ``max_bin - 1`` edges at evenly spaced quantiles, as XGBoost
``hist`` cuts it (every distinct value its own bin when there are few). A value's code
is the number of edges below it, so "code <= t" is exactly "value <= edges[t]": a split
found on codes is applied to raw values by its threshold ``edges[t]``. NaN gets code 255.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import BoostError

MISSING = 255


def as_matrix(X: Any, what: str = "X") -> tuple[np.ndarray, list[str]]:
    """A 2-D float64 matrix and column names; non-numeric, infinite or all-NaN columns are
    errors that name the columns (NaN is a missing value)."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(X, pd.DataFrame):
        columns = [str(c) for c in X.columns]
        if len(set(columns)) != len(columns):
            dup = sorted({c for c in columns if columns.count(c) > 1})
            raise BoostError(f"{what} has duplicate column names {dup}")
        bad = [c for c, dt in zip(columns, X.dtypes, strict=True)
               if not (pd.api.types.is_numeric_dtype(dt) or pd.api.types.is_bool_dtype(dt))]
        if bad:
            raise BoostError(f"{what} has non-numeric columns {bad}: encode them as numbers "
                             "(e.g. one-hot or category codes) first")
        try:
            mat = X.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise BoostError(f"{what} could not be read as numbers: {exc}") from None
    else:
        arr = np.asarray(X)
        if arr.ndim != 2:
            raise BoostError(f"{what} must be 2-dimensional (rows x columns), got shape "
                             f"{arr.shape}")
        columns = [f"f{i}" for i in range(arr.shape[1])]
        if arr.dtype.kind in "biuf":
            mat = arr.astype(np.float64)
        else:
            mat = np.empty(arr.shape)
            bad = []
            for j in range(arr.shape[1]):
                try:
                    mat[:, j] = [np.nan if v is None else float(v) for v in arr[:, j]]
                except (TypeError, ValueError):
                    bad.append(columns[j])
            if bad:
                raise BoostError(f"{what} has non-numeric columns {bad}")
    inf = [c for c, col in zip(columns, np.isinf(mat).T, strict=True) if col.any()]
    if inf:
        raise BoostError(f"{what} has infinite values in columns {inf}; use NaN for missing")
    empty = [c for c, col in zip(columns, np.isnan(mat).T, strict=True) if col.all()]
    if empty and len(mat):
        raise BoostError(f"{what} has columns that are entirely missing (NaN): {empty}")
    return mat, columns


def select(X: Any, columns: list[str], what: str = "X") -> np.ndarray:
    """The training columns of a prediction input, by name (frames) or position (arrays)."""
    mat, names = as_matrix(X, what)
    if names == columns:
        return mat
    if hasattr(X, "columns"):
        missing = [c for c in columns if c not in names]
        if missing:
            raise BoostError(f"{what} lacks the training columns {missing}")
        return mat[:, [names.index(c) for c in columns]]
    if mat.shape[1] != len(columns):
        raise BoostError(f"{what} has {mat.shape[1]} columns; the model was trained on "
                         f"{len(columns)}")
    return mat


def fit_edges(col: np.ndarray, max_bin: int) -> np.ndarray:
    """At most ``max_bin - 1`` increasing edges for one column (NaN ignored).

    The cut points are those XGBoost's ``hist`` takes from an exact quantile summary
    (``WQSummary::SetPrune`` to ``max_bin + 1`` entries, then every entry but the first):
    values of the column at evenly spaced ranks, or every distinct value but the smallest
    when there are few. XGBoost sends "value < cut" left; the edge is the largest float
    below the cut, so "value <= edge" selects the same values.
    """
    values, counts = np.unique(col[~np.isnan(col)], return_counts=True)
    size = len(values)
    if size > max_bin + 1:
        rmax = np.cumsum(counts).astype(np.float64)
        rmin, w = rmax - counts, counts.astype(np.float64)
        dx2 = 2 * (np.arange(1, max_bin) * (rmin[-1] - rmax[0]) / max_bin + rmax[0])
        i = 1 + np.searchsorted((rmin + rmax)[2:], dx2, side="right")
        dx2, i = dx2[i < size - 1], i[i < size - 1]
        i = np.where(dx2 < rmin[i] + w[i] + rmax[i + 1] - w[i + 1], i, i + 1)
        values = values[np.unique(np.concatenate([[0], i, [size - 1]]))]
    cuts = values[1 : min(len(values), max_bin)]
    return np.nextafter(cuts, -np.inf)


def bin_matrix(X: np.ndarray, max_bin: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Codes (n, F) uint8 and the edges of every column."""
    edges = [fit_edges(X[:, j], max_bin) for j in range(X.shape[1])]
    return apply_edges(X, edges), edges


def apply_edges(X: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    codes = np.empty(X.shape, dtype=np.uint8)
    for j, e in enumerate(edges):
        col = X[:, j]
        codes[:, j] = np.searchsorted(e, col, side="left")
        codes[np.isnan(col), j] = MISSING
    return codes


def slot_table(edges: list[np.ndarray], n_slots: int,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """Candidate thresholds (F, n_slots) int16: slot 0 = every non-missing value, then the
    real thresholds (shuffled by ``rng`` if given), then -1 for empty slots."""
    table = np.full((len(edges), n_slots), -1, dtype=np.int16)
    for j, e in enumerate(edges):
        thr = np.arange(len(e), dtype=np.int16)
        if rng is not None:
            rng.shuffle(thr)
        table[j, 0] = len(e)  # the largest code of this column
        table[j, 1 : 1 + len(e)] = thr
    return table


def canonical_threshold(codes: np.ndarray, t: int, default_left: bool) -> int:
    """The threshold XGBoost would report for the node partition "code <= t": with missing
    values going right the smallest equivalent one, going left the largest. ``codes`` are
    those of the node's rows in the tree's sample (rows that carry gradients)."""
    present = codes[codes != MISSING]
    if not default_left:
        below = present[present <= t]
        return int(below.max()) if below.size else t
    above = present[present > t]
    return int(above.min()) - 1 if above.size else t


def goes_left(values: np.ndarray, threshold: float, default_left: bool) -> np.ndarray:
    """Rows (raw values) that a split sends left."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(values), default_left, values <= threshold)


def codes_left(codes: np.ndarray, t: int, default_left: bool) -> np.ndarray:
    """Rows (bin codes) that a split sends left; same rows as :func:`goes_left`."""
    return np.where(codes == MISSING, default_left, codes <= t)


ALL_VALUES = float(np.finfo(np.float64).max)  # threshold that every non-missing value meets


def threshold_value(edges: np.ndarray, t: int) -> float:
    """The raw-value threshold of "code <= t" (the largest code means every value)."""
    return float(edges[t]) if t < len(edges) else ALL_VALUES


def code_counts(codes: np.ndarray) -> np.ndarray:
    """(F, 256) rows per bin code of each column (code 255: missing). A node's counts are
    its parent's less its sibling's, as histograms are."""
    n_feat = codes.shape[1]
    idx = (np.arange(n_feat) * 256 + codes.astype(np.intp)).ravel()
    return np.bincount(idx, minlength=n_feat * 256).reshape(n_feat, 256)


def level_counts(computed: dict[int, np.ndarray], derived: dict[int, tuple[int, int]],
                 previous: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """:func:`code_counts` of a level's nodes: counted for ``computed`` (node -> codes of
    its rows that carry gradients), for each ``derived`` node (-> (parent, sibling)) the
    parent's counts of the ``previous`` level less the sibling's."""
    counts = {n: code_counts(codes) for n, codes in computed.items()}
    for n, (parent, sibling) in derived.items():
        counts[n] = previous[parent] - counts[sibling]
    return counts


def usable_slots(counts: np.ndarray, thresholds: np.ndarray, min_rows: int) -> np.ndarray:
    """(F, n_slots) True where the split "code <= threshold" leaves at least ``min_rows``
    rows on each side, missing values aside, given one node's :func:`code_counts` (of the
    rows that carry gradients); slot 0 (every non-missing value) splits off the missing
    values instead. An empty slot (-1) is never usable."""
    cum = np.cumsum(counts[:, :MISSING], axis=1)
    present = cum[:, -1]
    thr = thresholds.astype(np.intp)
    exists = thr >= 0
    left = np.take_along_axis(cum, np.where(exists, thr, 0), axis=1)
    right = present[:, None] - left
    ok = exists & (left >= min_rows) & (right >= min_rows)
    ok[:, 0] = exists[:, 0] & (present >= min_rows) & (counts[:, MISSING] >= min_rows)
    return ok
