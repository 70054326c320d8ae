"""Joint target-audience crowd per cell: labels at one party, visits at another.

The label holder (retailer) encrypts its 0/1 target-audience flag per PSI-aligned person;
the visit holder (operator) bounds each person to ``max_cells`` cells (once per cell),
adds the encrypted flags up per cell, adds discrete Laplace noise drawn by OpenDP and paid
on its own ledger (L1 sensitivity ``max_cells``) and re-randomises. The label holder
decrypts noisy counts only. Neither sees the other's rows; the operator sees ciphertexts,
the retailer sees the cell list (the ``keys``, e.g. every cell of the city: data-independent).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np
import pandas as pd

from ..dp import PrivacyLedger, bound_contributions
from ..dp.bounding_bias import (
    BOUNDING_SHARE,
    BoundingLoss,
    corrected_frame,
    release_bounding_loss,
)
from ..dp.errors import DPError
from ..dp.mechanisms import check_share, release_noise
from ..he import SparseMask
from ..he.bfv import ROW, SLOTS
from ..net.driver import run, stopping
from ..net.session import Party
from ..protocol import ProgressCallback
from .encrypted_counts import TITLE, CountsResult, Grouper, KeyHolder

SESSION = "joint-crowd"


def choose_copies(n_rows: int, n_groups: int) -> int:
    """Groups per mask (a power of two) balancing encryption volume against rotations."""
    best, best_cost = 1, math.inf
    k = 1
    while k <= min(ROW // 2, max(1, n_groups) * 2):
        n_cts = -(-n_rows // (SLOTS // k))
        results = -(-n_groups // k)
        rotations = results * (int(math.log2(ROW // k)) + 1)
        # ms (BFV, N=16384): encrypt, send, load, check and multiply per ciphertext; rotate
        # and add per rotation; noise, input check and flooding per result
        cost = 90.0 * n_cts + 16.0 * rotations + 60.0 * results
        if cost < best_cost:
            best, best_cost = k, cost
        k *= 2
    return best


def check_flags(values: Any, what: str) -> np.ndarray:
    """0/1 flags as float, or a clear error naming the bad rows."""
    s = pd.Series(np.asarray(values).ravel() if not isinstance(values, pd.Series) else values)
    if s.isna().any():
        raise DPError(f"{what}: {int(s.isna().sum())} missing values; use 0 or 1")
    try:
        arr = s.astype(float).to_numpy()
    except (TypeError, ValueError) as exc:
        raise DPError(f"{what}: values must be 0/1 or True/False") from exc
    bad = ~np.isin(arr, (0.0, 1.0))
    if bad.any():
        raise DPError(f"{what}: {int(bad.sum())} values are not 0/1, e.g. "
                      f"{s[bad].head(3).tolist()}")
    return arr


def crowd_for_labels(party: Party, ta: Any, *, visit_holder: str,
                     session: str = SESSION, timeout: float | None = 600,
                     progress: ProgressCallback | None = None) -> pd.DataFrame:
    """Label holder: the noisy crowd of the target audience per cell.

    ``ta`` is the 0/1 flag of each PSI-aligned row, in PSI order. Returns one row per cell:
    ``h3`` (cell id), ``count``, ``ci_low``, ``ci_high`` (95 %), ``suppressed``.
    """
    with stopping(party, [visit_holder], session=session, protocol=TITLE):
        flags = check_flags(ta, "target-audience flags")
        res = run(party, KeyHolder(flags, [visit_holder]), session=session, timeout=timeout,
                  progress=progress, watch=[visit_holder])
    return crowd_frame(res)



def crowd_frame(res: CountsResult) -> pd.DataFrame:
    """Decrypted group sums -> released cells frame (post-processing only).

    ``count`` is corrected for what bounding removed; ``[ci_low, ci_high]`` is a 95 %
    interval for the cell's true crowd over the aligned persons (DP noise and bounding;
    see :mod:`fedlab_kit.dp.bounding_bias` for the assumption behind the upper end).
    ``dp_noise`` is the noise half-width alone, ``bounding_added`` what the correction
    added, ``suppressed`` marks noisy bounded counts below ``suppress_below``.
    """
    meta = res.meta
    keys = list(meta["keys"])
    noisy = np.rint(res.sums[:, : meta["copies"]].ravel()[: len(keys)]).astype(np.int64)
    return corrected_frame(meta["cell_col"], keys, noisy, int(meta["ci_halfwidth"]),
                           BoundingLoss.from_meta(meta), int(meta["suppress_below"]),
                           meta["epsilon"])


def cell_masks(rows: np.ndarray, cells: np.ndarray, n_cells: int, copies: int) -> list[SparseMask]:
    """Sparse masks answering ``copies`` cells each: cell c is slot c % copies of mask
    c // copies."""
    order = np.argsort(cells, kind="stable")
    rows, cells = rows[order], cells[order]
    edges = np.searchsorted(cells, np.arange(0, n_cells + copies, copies))
    return [(rows[a:b], cells[a:b] % copies) for a, b in itertools.pairwise(edges)
            ][: -(-n_cells // copies)]


def crowd_for_visits(
    party: Party, persons: Sequence[Any] | pd.Series, visits: pd.DataFrame, *,
    ledger: PrivacyLedger, epsilon: float, keys: Sequence[str], label_holder: str,
    person_col: str = "user_id", cell_col: str = "h3", max_cells: int = 5,
    bounding_share: float = BOUNDING_SHARE, suppress_below: int = 10,
    seed: int | None = None, session: str = SESSION,
    timeout: float | None = 600, executor: Executor | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Visit holder: serve one joint crowd release and pay ``epsilon`` for it on ``ledger``.

    ``persons`` are the PSI-aligned person ids in PSI order; ``visits`` has ``person_col``
    and ``cell_col``. A ``bounding_share`` of ``epsilon`` releases how many cells persons
    visit, so the label holder can correct the counts for what bounding to ``max_cells``
    removed (:mod:`fedlab_kit.dp.bounding_bias`). Returns a report of the rows used and
    excluded (and why).
    """
    with stopping(party, [label_holder], session=session, protocol=TITLE):
        return _serve_crowd(party, persons, visits, ledger=ledger, epsilon=epsilon, keys=keys,
                            label_holder=label_holder, person_col=person_col,
                            cell_col=cell_col, max_cells=max_cells,
                            bounding_share=bounding_share, suppress_below=suppress_below,
                            seed=seed, session=session, timeout=timeout,
                            executor=executor, progress=progress)


def _serve_crowd(party: Party, persons: Sequence[Any] | pd.Series, visits: pd.DataFrame, *,
                 ledger: PrivacyLedger, epsilon: float, keys: Sequence[str], label_holder: str,
                 person_col: str, cell_col: str, max_cells: int, bounding_share: float,
                 suppress_below: int,
                 seed: int | None, session: str, timeout: float | None,
                 executor: Executor | None, progress: ProgressCallback | None
                 ) -> dict[str, Any]:
    ledger.require("joint TA crowd per cell", epsilon)
    share = check_share(bounding_share, "bounding_share")
    rows, cells, pairs, report = prepare_visits(persons, visits, keys=keys,
                                                person_col=person_col, cell_col=cell_col,
                                                max_cells=max_cells, seed=seed)
    n, n_keys = len(persons), len(keys)
    copies = choose_copies(n, n_keys)
    masks = cell_masks(rows, cells, n_keys, copies)
    query = f"joint TA crowd per cell ({n_keys} cells)"

    def noise() -> tuple[np.ndarray, dict[str, Any]]:
        loss = release_bounding_loss(ledger, query, pairs, max_cells, epsilon * share)
        rel = release_noise(ledger, query, (len(masks), copies), epsilon * (1 - share),
                            sensitivity=max_cells,
                            meta={"max_cells": max_cells, "cells": n_keys,
                                  "label_holder": label_holder})
        meta = {"keys": [str(k) for k in keys], "copies": copies, "cell_col": cell_col,
                "ci_halfwidth": rel.ci_halfwidth, "epsilon": epsilon,
                "noise_scale": rel.noise_scale, "mechanism": rel.mechanism,
                "suppress_below": suppress_below, "max_cells": max_cells, **loss.to_meta()}
        report["release_id"] = rel.release_id
        report["bounding_loss"] = loss.loss
        return rel.values.astype(float), meta

    grouper = Grouper(label_holder, n, copies, masks, noise,
                      jobs=2 if executor is not None else 1)
    run(party, grouper, session=session, timeout=timeout, progress=progress,
        executor=executor, watch=[label_holder])
    return report


def visit_cells(visits: pd.DataFrame, *, resolution: int = 8, pois: pd.DataFrame | None = None,
                poi_col: str = "poi_id", lat_col: str = "lat", lon_col: str = "lon",
                cell_col: str = "h3", drop_unknown_pois: bool = False
                ) -> tuple[pd.DataFrame, dict[str, int]]:
    """Visits with the H3 cell (at ``resolution``) of where they happened.

    From ``lat``/``lon`` columns when the visits have them (rows out of range or missing are
    an error, with their count), else from ``pois`` (its ``lat``/``lon``) through ``poi_col``:
    visits to POIs missing from ``pois`` are an error with their count and examples, or
    dropped and counted when ``drop_unknown_pois``.
    """
    from .own_crowd import cells_of

    report = {"visit_rows": len(visits), "rows_unknown_poi": 0}
    if {lat_col, lon_col} <= set(visits.columns):
        out = visits.copy()
        out[cell_col] = cells_of(out[lat_col], out[lon_col], resolution)
        return out, report
    if pois is None or poi_col not in visits.columns:
        raise DPError(f"visits need {lat_col!r}/{lon_col!r} columns, or {poi_col!r} and a "
                      "POI table with lat/lon")
    missing = [c for c in (poi_col, lat_col, lon_col) if c not in pois.columns]
    if missing:
        raise DPError(f"the POI table has no column(s) {missing}")
    poi_cells = pd.Series(cells_of(pois[lat_col], pois[lon_col], resolution).to_numpy(),
                          index=pois[poi_col].to_numpy())
    if poi_cells.index.has_duplicates:
        raise DPError(f"the POI table lists some {poi_col} more than once")
    known = visits[poi_col].isin(poi_cells.index)
    if not known.all():
        examples = visits.loc[~known, poi_col].drop_duplicates().head(3).tolist()
        if not drop_unknown_pois:
            raise DPError(f"{int((~known).sum())} visits are to POIs not in the POI table, "
                          f"e.g. {examples}; fix them or pass drop_unknown_pois=True")
        report["rows_unknown_poi"] = int((~known).sum())
    out = visits[known].copy()
    out[cell_col] = poi_cells.reindex(out[poi_col]).to_numpy()
    return out, report


def prepare_visits(persons: Sequence[Any] | pd.Series, visits: pd.DataFrame, *,
                   keys: Sequence[str], person_col: str, cell_col: str, max_cells: int,
                   seed: int | None
                   ) -> tuple[np.ndarray, np.ndarray, pd.Series, dict[str, Any]]:
    """(row index, cell index) per bounded visit, the person of each distinct usable
    (person, cell) pair before bounding, and a report of what was excluded."""
    if not len(keys):
        raise DPError("no cells to release: pass the cells of the area as keys")
    missing = [c for c in (person_col, cell_col) if c not in visits.columns]
    if missing:
        raise DPError(f"visits have no column(s) {missing}; columns: {list(visits.columns)}")
    key_index = pd.Index([str(k) for k in dict.fromkeys(keys)])
    person_index = pd.Index(persons)
    if person_index.has_duplicates:
        raise DPError("aligned person ids contain duplicates: pass PSI's aligned rows")
    null = visits[person_col].isna() | visits[cell_col].isna()
    kept = visits.loc[~null, [person_col, cell_col]]
    aligned = person_index.get_indexer(kept[person_col]) >= 0
    inside = kept[cell_col].astype(str).isin(key_index)
    usable = kept[aligned & inside]
    bounded, bound_report = bound_contributions(usable, person_col, cell_col,
                                                max_keys=max_cells, seed=seed)
    rows = person_index.get_indexer(bounded[person_col]).astype(np.int64)
    cells = key_index.get_indexer(bounded[cell_col].astype(str)).astype(np.int64)
    report = {"visit_rows": len(visits), "rows_missing_person_or_cell": int(null.sum()),
              "rows_not_in_intersection": int((~aligned).sum()),
              "rows_outside_keys": int((aligned & ~inside).sum()), **bound_report,
              "aligned_persons": len(person_index), "cells": len(key_index)}
    pairs = usable.drop_duplicates([person_col, cell_col])[person_col]
    return rows, cells, pairs, report
