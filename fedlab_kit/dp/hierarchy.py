"""Post-processing of noisy counts released at two levels (cells and their totals).

A release that holds both detail cells ``x`` (noise of variance ``var_detail`` each) and,
separately noised, their total ``y`` (variance ``var_total``) is made consistent by the
least-squares (inverse-variance) estimate under ``sum(x) == y``:
``x_i + w (y - sum(x))`` with ``w = var_detail / (n var_detail + var_total)``.
The estimate is linear in independent noises of known law, so its error distribution is
known exactly in principle; :func:`linear_halfwidths` computes its quantiles by Monte Carlo
over the mechanisms' noise law (this computes interval widths; it is not privacy noise,
which OpenDP draws). Everything here looks only at released values: it costs no budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

MC_DRAWS = 200_000
MC_SEED = 20261201  # interval widths are a deterministic function of the noise law


def discrete_laplace_variance(scale: float) -> float:
    """Variance of the discrete Laplace law with ``scale`` (OpenDP's ``make_laplace`` on
    integers: P(k) proportional to exp(-|k| / scale))."""
    p = math.exp(-1.0 / scale)
    return 2.0 * p / (1.0 - p) ** 2


def _discrete_laplace(rng: np.random.Generator, scale: float, size: tuple[int, ...]
                      ) -> np.ndarray:
    p = math.exp(-1.0 / scale)
    return (rng.geometric(1 - p, size) - rng.geometric(1 - p, size)).astype(np.float64)


def reconcile(detail: np.ndarray, total: np.ndarray, var_detail: float, var_total: float
              ) -> np.ndarray:
    """Least-squares consistent detail: ``detail`` (..., n, E) and ``total`` (..., E), where
    the true total is the sum of the true detail over axis -2. Returns the adjusted detail;
    its sum over axis -2 is the inverse-variance weighted total."""
    n = detail.shape[-2]
    w = var_detail / (n * var_detail + var_total)
    gap = total - detail.sum(axis=-2)
    return detail + w * gap[..., None, :]


@dataclass(frozen=True)
class LinearErrors:
    """Quantiles and variances of the errors of reconciled stage counts.

    Stage ``s`` of a funnel is the sum of exits ``s..E-1``; ``detail[s]`` and ``total[s]``
    are ``1 - alpha`` quantiles of the absolute error of a reconciled detail stage count and
    of its total; ``detail_var`` / ``total_var`` are the matching variances.
    """

    detail: np.ndarray
    total: np.ndarray
    detail_var: np.ndarray
    total_var: np.ndarray


@lru_cache(maxsize=64)
def linear_halfwidths(n_cells: int, n_exits: int, scale_detail: float, scale_total: float,
                      alpha: float = 0.05, draws: int = MC_DRAWS) -> LinearErrors:
    """Error quantiles of :func:`reconcile` applied to exits noised with discrete Laplace
    (``scale_detail`` per cell and exit, ``scale_total`` per total and exit; ``inf`` when no
    total was released: totals are then the sums of the cells), turned into stage counts
    (reverse cumulative sums over exits)."""
    vd = discrete_laplace_variance(scale_detail)
    rng = np.random.default_rng(MC_SEED)
    e = _discrete_laplace(rng, scale_detail, (draws, n_cells, n_exits))
    if math.isinf(scale_total):
        vt, w, f = 0.0, 0.0, np.zeros((draws, n_exits))
    else:
        vt = discrete_laplace_variance(scale_total)
        w = vd / (n_cells * vd + vt)
        f = _discrete_laplace(rng, scale_total, (draws, n_exits))
    gap = f - e.sum(axis=1)
    cell = e[:, 0, :] + w * gap  # error of one reconciled cell's exits (all cells alike)
    tot = e.sum(axis=1) + n_cells * w * gap
    cell_stage, tot_stage = stages_from_exits(cell), stages_from_exits(tot)
    per_exit_cell = (1 - w) ** 2 * vd + (n_cells - 1) * w * w * vd + w * w * vt
    per_exit_tot = (1 - n_cells * w) ** 2 * n_cells * vd + (n_cells * w) ** 2 * vt
    left = np.arange(n_exits, 0, -1, dtype=np.float64)  # exits at or after each stage
    return LinearErrors(np.quantile(np.abs(cell_stage), 1 - alpha, axis=0),
                        np.quantile(np.abs(tot_stage), 1 - alpha, axis=0),
                        left * per_exit_cell, left * per_exit_tot)


def nonnegative_exits(detail: np.ndarray, total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The least-squares monotone, consistent funnel for independent exit noise.

    Stage counts are reverse cumulative sums of exits, so "non-increasing, non-negative
    stages" is "non-negative exits". Totals (..., E) are clipped at 0; then, per total, the
    detail (..., n, E) is projected onto {x >= 0, sum(x) = total} in the least-squares
    sense (``x_i - lam`` clipped at 0, ``lam`` chosen so the sum matches): isotonic
    regression in the noise's own metric, unlike a running minimum over stages (biased
    down) or clipping cells alone (biased up in sums).
    """
    tot = np.maximum(total, 0.0)
    x = np.moveaxis(detail, -2, -1)  # (..., E, n)
    order = -np.sort(-x, axis=-1)
    csum = np.cumsum(order, axis=-1)
    k = np.arange(1, x.shape[-1] + 1)
    lam_k = (csum - tot[..., None]) / k
    valid = order - lam_k > 0
    last = np.maximum(valid.shape[-1] - 1 - np.argmax(valid[..., ::-1], axis=-1), 0)
    lam = np.take_along_axis(lam_k, last[..., None], axis=-1)
    lam = np.where(valid.any(axis=-1, keepdims=True), lam, order[..., :1])
    out = np.maximum(x - lam, 0.0)
    return np.moveaxis(out, -1, -2), tot


def stages_from_exits(exits: np.ndarray) -> np.ndarray:
    """Stage counts (axis -1): stage ``s`` = sum of exits ``s..``."""
    return np.flip(np.cumsum(np.flip(exits, -1), -1), -1)


def exits_from_stages(stages: np.ndarray) -> np.ndarray:
    """Exit counts (persons whose funnel ends at each stage) from stage counts (axis -1):
    the inverse of :func:`stages_from_exits`."""
    out = np.asarray(stages, dtype=np.float64).copy()
    out[..., :-1] -= out[..., 1:].copy()
    return out
