"""Differentially private counts: noise comes only from OpenDP measurements.

:func:`release_counts` is the function analysts call: it spends the party's budget on
its :class:`~fedlab_kit.dp.ledger.PrivacyLedger` first and draws noise only if the spend
was accepted. Each released count ``c`` carries ``c ± ci_halfwidth``: the true count lies
in that (inclusive) interval with probability at least ``1 - alpha``, cell by cell (not
simultaneously for all cells).

The post-processing helpers at the end (:func:`clip_nonnegative`, :func:`monotone_funnel`)
only look at released values, so they cost no privacy budget.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import opendp.prelude as dp
import pandas as pd
from numpy.typing import ArrayLike

from fedlab_kit.dp.errors import DPError
from fedlab_kit.dp.ledger import PrivacyLedger, check_delta, check_epsilon

dp.enable_features("contrib")

LAPLACE = "discrete_laplace"
GAUSSIAN = "discrete_gaussian"
_MAX_NUDGES = 64  # float steps to raise a scale until OpenDP's privacy map fits epsilon


@dataclass(frozen=True, eq=False)
class NoisyRelease:
    """Noisy integer counts with the noise scale, the privacy cost and their accuracy.

    ``accuracy`` is OpenDP's bound: ``P(|noisy - true| >= accuracy) <= alpha`` per cell.
    Noise is integer, so ``ci_halfwidth = ceil(accuracy) - 1`` is the same statement as an
    inclusive interval: ``true in [noisy - ci_halfwidth, noisy + ci_halfwidth]``.
    """

    values: np.ndarray
    mechanism: str
    noise_scale: float
    epsilon: float
    delta: float
    alpha: float
    accuracy: float
    ci_halfwidth: int
    release_id: int | None = None

    @property
    def lower(self) -> np.ndarray:
        """Lower ends of the per-cell ``1 - alpha`` intervals."""
        return self.values - self.ci_halfwidth

    @property
    def upper(self) -> np.ndarray:
        """Upper ends of the per-cell ``1 - alpha`` intervals."""
        return self.values + self.ci_halfwidth


@dataclass(frozen=True)
class _Plan:
    """A constructed OpenDP measurement and what it costs; no noise is drawn yet."""

    measurement: dp.Measurement
    mechanism: str
    noise_scale: float
    epsilon: float
    delta: float
    certified: Any  # OpenDP's privacy map at the sensitivity (<= the budgeted cost)
    alpha: float
    accuracy: float


# ---------------------------------------------------------------- validation


def _check_alpha(alpha: float) -> float:
    value = float(alpha)
    if not 0.0 < value < 1.0:
        raise DPError(f"alpha must be in (0, 1), e.g. 0.05 for 95% intervals; got {alpha!r}")
    return value


def check_share(share: float, what: str) -> float:
    """A share of one release's epsilon given to a part of it: a number in [0, 1)."""
    try:
        value = float(share)
    except (TypeError, ValueError):
        raise DPError(f"{what} must be a number in [0, 1), got {share!r}") from None
    if not 0.0 <= value < 1.0:
        raise DPError(f"{what} must be in [0, 1) (a share of the release's epsilon), "
                      f"got {share!r}")
    return value


def _int_sensitivity(sensitivity: float) -> int:
    """The L1 sensitivity of integer counts as a positive int (distances are integral)."""
    value = float(sensitivity)
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise DPError("the L1 sensitivity of integer counts must be a positive whole number"
                      f" (e.g. max_keys from bound_contributions), got {sensitivity!r}")
    return int(value)


def _positive(value: float, what: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise DPError(f"{what} must be a finite number > 0, got {value!r}")
    return number


def _as_counts(counts: ArrayLike) -> np.ndarray:
    """Counts as an int64 array (any shape), or DPError."""
    arr = np.asarray(counts)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise DPError(f"counts must be integers, got an array of {arr.dtype}")
    if arr.size == 0:
        raise DPError("counts is empty: there is nothing to release")
    return arr.astype(np.int64)


# ---------------------------------------------------------------- measurements


def _laplace_measurement(scale: float) -> dp.Measurement:
    space = dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64")
    return dp.m.make_laplace(*space, scale=scale)


def _laplace_plan(epsilon: float, sensitivity: float, alpha: float) -> _Plan:
    """Discrete Laplace with scale ``sensitivity / epsilon`` (raised by a few ulps if
    OpenDP's conservatively rounded map would otherwise exceed ``epsilon``)."""
    eps, k, alpha = check_epsilon(epsilon), _int_sensitivity(sensitivity), _check_alpha(alpha)
    scale = k / eps
    for _ in range(_MAX_NUDGES):
        meas = _laplace_measurement(scale)
        certified = meas.map(k)
        if certified <= eps:
            accuracy = dp.discrete_laplacian_scale_to_accuracy(scale, alpha)
            return _Plan(meas, LAPLACE, scale, eps, 0.0, certified, alpha, accuracy)
        scale = math.nextafter(scale, math.inf)
    raise DPError(f"OpenDP could not certify epsilon={eps!r} for sensitivity {k}")


def _gaussian_plan(epsilon: float, delta: float, sensitivity_l2: float, alpha: float) -> _Plan:
    """Discrete Gaussian calibrated by OpenDP to ``(epsilon, delta)`` via zCDP."""
    eps, dlt = check_epsilon(epsilon), check_delta(delta)
    if dlt == 0.0:
        raise DPError("the Gaussian mechanism needs delta > 0; use release_counts for pure DP")
    l2, alpha = _positive(sensitivity_l2, "sensitivity_l2"), _check_alpha(alpha)
    space = dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T="f64")

    def chain(scale: float) -> dp.Measurement:
        zcdp = dp.m.make_gaussian(*space, scale=scale)
        return dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(zcdp), dlt)

    scale = dp.binary_search_param(chain, d_in=l2, d_out=(eps, dlt), T=float)
    meas = chain(scale)
    if not meas.check(l2, (eps, dlt)):  # binary_search_param promises this; be sure
        raise DPError(f"OpenDP could not certify (epsilon={eps!r}, delta={dlt!r})")
    accuracy = dp.discrete_gaussian_scale_to_accuracy(scale, alpha)
    return _Plan(meas, GAUSSIAN, scale, eps, dlt, meas.map(l2), alpha, accuracy)


def halfwidth_of(accuracy: float) -> int:
    """The inclusive integer half-width that OpenDP's ``accuracy`` bound means for
    integer noise: ``P(|noise| >= accuracy) <= alpha`` is ``|noise| <= ceil(accuracy) - 1``."""
    return max(0, math.ceil(accuracy) - 1)


def _sample(plan: _Plan, counts: np.ndarray) -> NoisyRelease:
    """Invoke the OpenDP measurement on the flattened counts (this draws the noise)."""
    noisy = np.asarray(plan.measurement(counts.ravel()), dtype=np.int64).reshape(counts.shape)
    halfwidth = halfwidth_of(plan.accuracy)
    return NoisyRelease(noisy, plan.mechanism, plan.noise_scale, plan.epsilon, plan.delta,
                        plan.alpha, plan.accuracy, halfwidth)


# ---------------------------------------------------------------- public API


def laplace_counts(counts: ArrayLike, epsilon: float, sensitivity: float,
                   alpha: float = 0.05) -> NoisyRelease:
    """Add discrete Laplace noise to integer counts (L1 ``sensitivity``), epsilon-DP.

    This does not touch any ledger: use :func:`release_counts` to account for it.
    """
    plan = _laplace_plan(epsilon, sensitivity, alpha)
    return _sample(plan, _as_counts(counts))


def gaussian_counts(counts: ArrayLike, epsilon: float, delta: float, sensitivity_l2: float,
                    alpha: float = 0.05) -> NoisyRelease:
    """Add discrete Gaussian noise to integer counts (L2 sensitivity), (epsilon, delta)-DP.

    Better than Laplace when one person touches many cells (L2 = sqrt(k) vs L1 = k).
    This does not touch any ledger: use :func:`release_counts_gaussian`.
    """
    plan = _gaussian_plan(epsilon, delta, sensitivity_l2, alpha)
    return _sample(plan, _as_counts(counts))


def accuracy_for(epsilon: float, sensitivity: float, alpha: float = 0.05) -> float:
    """The accuracy ``a`` that ``epsilon`` buys for :func:`release_counts`, before spending.

    With probability at least ``1 - alpha`` a released count is off by less than ``a``
    (so by at most ``ceil(a) - 1``).
    """
    eps, alpha = check_epsilon(epsilon), _check_alpha(alpha)
    scale = _positive(sensitivity, "sensitivity") / eps
    return float(dp.discrete_laplacian_scale_to_accuracy(scale, alpha))


def epsilon_for_accuracy(accuracy: float, sensitivity: float, alpha: float = 0.05) -> float:
    """The epsilon needed so a released count is off by less than ``accuracy`` with
    probability at least ``1 - alpha``; the inverse of :func:`accuracy_for`."""
    acc, alpha = _positive(accuracy, "accuracy"), _check_alpha(alpha)
    scale = dp.accuracy_to_discrete_laplacian_scale(acc, alpha)
    return _positive(sensitivity, "sensitivity") / float(scale)


def _release(ledger: PrivacyLedger, query: str, plan: _Plan, counts: ArrayLike,
             meta: Mapping[str, Any] | None) -> NoisyRelease:
    """Validate, spend on the ledger, then (and only then) draw the noise."""
    arr = _as_counts(counts)
    record = {**(meta or {}), "shape": list(arr.shape), "alpha": plan.alpha,
              "accuracy": plan.accuracy, "opendp_privacy_map": plan.certified}
    release_id = ledger.spend(query, plan.mechanism, plan.epsilon, plan.delta,
                              noise_scale=plan.noise_scale, meta=record)
    return dataclasses.replace(_sample(plan, arr), release_id=release_id)


def release_counts(ledger: PrivacyLedger, query: str, counts: ArrayLike, epsilon: float,
                   sensitivity: float, meta: Mapping[str, Any] | None = None, *,
                   alpha: float = 0.05) -> NoisyRelease:
    """Release integer counts with discrete Laplace noise, paid for on ``ledger``.

    The spend is recorded first; if the ledger refuses (:class:`BudgetExceeded`) no noise
    is drawn and nothing is released. If sampling fails after the spend, the budget stays
    spent (the safe direction).
    """
    return _release(ledger, query, _laplace_plan(epsilon, sensitivity, alpha), counts, meta)


def release_noise(ledger: PrivacyLedger, query: str, shape: int | tuple[int, ...],
                  epsilon: float, sensitivity: float, meta: Mapping[str, Any] | None = None, *,
                  alpha: float = 0.05) -> NoisyRelease:
    """Discrete Laplace noise alone, paid for on ``ledger``, for counts that are added to it
    elsewhere (e.g. under encryption): ``values`` is the mechanism applied to zero counts,
    which for this additive mechanism is exactly its noise."""
    zeros = np.zeros(shape, dtype=np.int64)
    return _release(ledger, query, _laplace_plan(epsilon, sensitivity, alpha), zeros, meta)


def release_counts_gaussian(ledger: PrivacyLedger, query: str, counts: ArrayLike,
                            epsilon: float, delta: float, sensitivity_l2: float,
                            meta: Mapping[str, Any] | None = None, *,
                            alpha: float = 0.05) -> NoisyRelease:
    """Like :func:`release_counts` with discrete Gaussian noise, paid as (epsilon, delta)."""
    plan = _gaussian_plan(epsilon, delta, sensitivity_l2, alpha)
    return _release(ledger, query, plan, counts, meta)


# ---------------------------------------------------------------- post-processing

_A = TypeVar("_A")


def _like(values: _A, result: np.ndarray) -> _A:
    """Return ``result`` as a pandas object of the same shape when ``values`` was one."""
    out: Any = result
    if isinstance(values, pd.DataFrame):
        out = pd.DataFrame(result, index=values.index, columns=values.columns)
    elif isinstance(values, pd.Series):
        out = pd.Series(result, index=values.index, name=values.name)
    return out


def suppression_note(suppressed: ArrayLike, below: int) -> np.ndarray:
    """Why each flagged number is suppressed ("" where it is not)."""
    return np.where(np.asarray(suppressed, dtype=bool), f"noisy count below {below}", "")


def clip_nonnegative(values: _A) -> _A:
    """Replace negative released values by 0 (post-processing: costs no budget)."""
    return _like(values, np.maximum(np.asarray(values), 0))


def monotone_funnel(values: _A) -> _A:
    """Make stages non-increasing along the last axis with a running minimum.

    A funnel's stage ``i`` can never exceed stage ``i - 1``; noise can break that. This is
    pure post-processing of released values (costs no budget, keeps the DP guarantee).
    The running minimum is simple but biased downward for late stages; values that are
    already non-increasing are returned unchanged.
    """
    return _like(values, np.minimum.accumulate(np.asarray(values), axis=-1))
