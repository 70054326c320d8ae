"""OpenDP-backed releases: noise statistics, intervals, spend-before-sample, bounding.

The statistical tests draw real OpenDP noise (it cannot be seeded), so each tolerance is
computed to make a correct implementation fail with probability below ``FAIL_PROB``.
"""

from __future__ import annotations

import math
from pathlib import Path
from statistics import NormalDist

import numpy as np
import opendp.core
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedlab_kit.dp import (
    BudgetExceeded,
    DPError,
    PrivacyLedger,
    accuracy_for,
    bound_contributions,
    clip_nonnegative,
    epsilon_for_accuracy,
    gaussian_counts,
    l2_sensitivity_for,
    laplace_counts,
    monotone_funnel,
    release_counts,
    release_counts_gaussian,
    sensitivity_for,
)

FAIL_PROB = 1e-6
DRAWS = 40_000  # 0.4 s of OpenDP sampling


# ---------------------------------------------------------------- discrete Laplace facts


def _ratio(scale: float) -> float:
    return math.exp(-1.0 / scale)


def _dlap_moments(scale: float) -> tuple[float, float, float]:
    """Exact E[X^2], E[X^4], E[X^6] of the discrete Laplace with this scale.

    P(X = x) = (1 - r) / (1 + r) * r^|x| with r = exp(-1/scale); the support is cut where
    the remaining mass is below 1e-26.
    """
    r = _ratio(scale)
    x = np.arange(-int(60 * scale) - 1, int(60 * scale) + 2, dtype=np.float64)
    pmf = (1 - r) / (1 + r) * r ** np.abs(x)
    return tuple(float(np.sum(pmf * x**p)) for p in (2, 4, 6))  # type: ignore[return-value]


def _dlap_coverage(scale: float, halfwidth: int) -> float:
    """P(|X| <= halfwidth) for the discrete Laplace: 1 - 2 r^(h+1) / (1 + r)."""
    r = _ratio(scale)
    return 1.0 - 2.0 * r ** (halfwidth + 1) / (1.0 + r)


def _noise(counts: np.ndarray, epsilon: float, sensitivity: int) -> np.ndarray:
    """DRAWS noise values from repeated releases of the same counts."""
    reps = DRAWS // counts.size
    return np.concatenate([laplace_counts(counts, epsilon, sensitivity).values - counts
                           for _ in range(reps)])


def test_noise_variance_matches_the_stated_scale() -> None:
    """Var = 2r/(1-r)^2 ~ 2 b^2; the tolerance is a two-sided normal bound on the mean of
    X^2 from its exact moments, with a Cornish-Fisher term for the skewness of X^2."""
    counts = np.arange(1000, dtype=np.int64) % 37
    epsilon, k = 0.3, 3
    scale = k / epsilon
    assert laplace_counts(counts, epsilon, k).noise_scale == pytest.approx(scale, rel=1e-12)
    noise = _noise(counts, epsilon, k)
    n = noise.size

    m2, m4, m6 = _dlap_moments(scale)
    assert m2 == pytest.approx(2 * scale**2, rel=0.01)  # "variance ~ 2 b^2"
    var_sq = m4 - m2**2  # Var(X^2)
    skew_sq = (m6 - 3 * m2 * m4 + 2 * m2**3) / var_sq**1.5
    z = NormalDist().inv_cdf(1 - FAIL_PROB / 2)
    z_cf = z + (z * z - 1) * skew_sq / (6 * math.sqrt(n))
    tolerance = z_cf * math.sqrt(var_sq / n)
    assert tolerance < 0.1 * m2  # the test can see a 5% error in the scale
    assert abs(np.mean(noise.astype(np.float64) ** 2) - m2) <= tolerance
    assert abs(np.mean(noise)) <= z * math.sqrt(m2 / n)  # and the noise is centred


def test_intervals_cover_about_95_percent() -> None:
    """Coverage indicators are iid Bernoulli(p); Bernstein's inequality gives the bound."""
    epsilon, k = 0.02, 1
    scale = k / epsilon
    counts = np.full(4000, 1234, dtype=np.int64)
    hits = total = 0
    for _ in range(DRAWS // counts.size):
        rel = laplace_counts(counts, epsilon, k)
        inside = (rel.lower <= counts) & (counts <= rel.upper)
        hits, total = hits + int(inside.sum()), total + counts.size
    p = _dlap_coverage(scale, rel.ci_halfwidth)
    assert 0.95 <= p <= 0.955  # conservative, and only just (integer noise)
    log_term = math.log(2 / FAIL_PROB)
    variance = p * (1 - p)
    bound = (2 * log_term / 3 + math.sqrt(4 * log_term**2 / 9 + 8 * total * log_term * variance)
             ) / (2 * total)
    assert bound < 0.01
    assert abs(hits / total - p) <= bound


@pytest.mark.parametrize(("epsilon", "k"), [(1.0, 1), (0.5, 2), (0.1, 3), (2.0, 1), (0.7, 5)])
def test_halfwidth_is_the_tightest_95_percent_interval(epsilon: float, k: int) -> None:
    rel = laplace_counts(np.array([5, 0, 17]), epsilon, k)
    assert rel.accuracy == pytest.approx(accuracy_for(epsilon, k))
    assert rel.ci_halfwidth == max(0, math.ceil(rel.accuracy) - 1)
    assert _dlap_coverage(rel.noise_scale, rel.ci_halfwidth) >= 0.95
    if rel.ci_halfwidth > 0:
        assert _dlap_coverage(rel.noise_scale, rel.ci_halfwidth - 1) < 0.95
    assert np.array_equal(rel.upper - rel.lower, np.full(3, 2 * rel.ci_halfwidth))


def test_release_keeps_shape_and_integer_type() -> None:
    counts = np.array([[100, 60, 20], [80, 81, 10]], dtype=np.int32)
    rel = laplace_counts(counts, 1.0, 1)
    assert rel.values.shape == (2, 3)
    assert rel.values.dtype == np.int64
    assert (rel.epsilon, rel.delta, rel.mechanism) == (1.0, 0.0, "discrete_laplace")
    with pytest.raises(DPError, match="integers"):
        laplace_counts(np.array([1.5, 2.0]), 1.0, 1)
    with pytest.raises(DPError, match="whole number"):
        laplace_counts(counts, 1.0, 1.5)
    with pytest.raises(DPError, match="epsilon"):
        laplace_counts(counts, math.inf, 1)


@settings(max_examples=100, deadline=None)
@given(epsilon=st.floats(1e-3, 20.0), k=st.integers(1, 50), alpha=st.floats(0.01, 0.5))
def test_fitted_scale_never_exceeds_epsilon(epsilon: float, k: int, alpha: float) -> None:
    """OpenDP rounds its privacy map up; the scale is raised until the map fits."""
    rel = laplace_counts(np.array([3]), epsilon, k, alpha=alpha)
    assert rel.epsilon == epsilon
    assert rel.noise_scale == pytest.approx(k / epsilon, rel=1e-12)
    assert rel.noise_scale >= k / epsilon


@settings(max_examples=100, deadline=None)
@given(epsilon=st.floats(1e-3, 10.0), k=st.integers(1, 20), alpha=st.floats(0.01, 0.5))
def test_accuracy_and_epsilon_are_inverse(epsilon: float, k: int, alpha: float) -> None:
    accuracy = accuracy_for(epsilon, k, alpha)
    assert epsilon_for_accuracy(accuracy, k, alpha) == pytest.approx(epsilon, rel=1e-9)
    assert accuracy_for(epsilon * 2, k, alpha) < accuracy  # more budget, better accuracy


# ---------------------------------------------------------------- spend before sample


@pytest.fixture
def ledger(tmp_path: Path) -> PrivacyLedger:
    return PrivacyLedger(tmp_path / "privacy_ledger.sqlite", 1.0, 1e-6, party="acme")


@pytest.fixture
def invocations(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record every OpenDP measurement invocation (every noise draw)."""
    calls: list[object] = []
    real = opendp.core.measurement_invoke

    def spy(measurement: object, arg: object) -> object:
        calls.append(measurement)
        return real(measurement, arg)

    monkeypatch.setattr(opendp.core, "measurement_invoke", spy)
    return calls


def test_refused_release_draws_no_noise_and_records_nothing(
        ledger: PrivacyLedger, invocations: list[object]) -> None:
    ledger.spend("earlier", "discrete_laplace", 0.9)
    with pytest.raises(BudgetExceeded, match=r"only epsilon=0\.1,"):
        release_counts(ledger, "too big", np.array([10, 20]), 0.5, 1)
    assert invocations == []
    assert ledger.releases()["query"].tolist() == ["earlier"]

    rel = release_counts(ledger, "fits", np.array([10, 20]), 0.1, 1, meta={"table": "visits"})
    assert len(invocations) == 1  # the spy does see real draws
    frame = ledger.releases()
    assert frame["query"].tolist() == ["earlier", "fits"]
    assert rel.release_id == frame["id"].iloc[-1]
    assert frame["noise_scale"].iloc[-1] == rel.noise_scale == pytest.approx(10.0)
    assert '"table": "visits"' in frame["meta"].iloc[-1]


def test_spend_is_recorded_before_noise_is_drawn(
        ledger: PrivacyLedger, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(measurement: object, arg: object) -> object:
        assert len(ledger.releases()) == 1, "noise drawn before the spend was recorded"
        raise RuntimeError("sampler failed")

    monkeypatch.setattr(opendp.core, "measurement_invoke", fail)
    with pytest.raises(RuntimeError, match="sampler failed"):
        release_counts(ledger, "q", np.array([1, 2]), 0.25, 1)
    assert ledger.spent().epsilon == 0.25  # a failed draw keeps the budget spent


def test_invalid_counts_spend_nothing(ledger: PrivacyLedger,
                                      invocations: list[object]) -> None:
    with pytest.raises(DPError, match="integers"):
        release_counts(ledger, "q", np.array([0.5, 1.0]), 0.1, 1)
    with pytest.raises(DPError, match="empty"):
        release_counts(ledger, "q", np.array([], dtype=np.int64), 0.1, 1)
    assert ledger.releases().empty
    assert invocations == []


def test_gaussian_release_is_paid_in_epsilon_and_delta(ledger: PrivacyLedger) -> None:
    k = 4
    rel = release_counts_gaussian(ledger, "g", np.array([50, 60, 70]), 0.5, 1e-7,
                                  l2_sensitivity_for(k))
    assert ledger.spent() == (0.5, 1e-7)
    assert rel.mechanism == "discrete_gaussian"
    assert rel.noise_scale > 0
    assert rel.ci_halfwidth == max(0, math.ceil(rel.accuracy) - 1)
    with pytest.raises(DPError, match="delta > 0"):
        gaussian_counts(np.array([1]), 0.5, 0.0, 1.0)
    with pytest.raises(BudgetExceeded, match="delta"):
        release_counts_gaussian(ledger, "g2", np.array([1]), 0.1, 1e-6, 1.0)


def test_gaussian_noise_has_the_stated_scale() -> None:
    """A discrete Gaussian with sigma >= 1 has variance sigma^2 (relative error < 1e-6), so
    mean(X^2) / sigma^2 is ~ chi2_n / n: sd sqrt(2/n), skewness sqrt(8/n) (Cornish-Fisher)."""
    counts = np.zeros(DRAWS // 4, dtype=np.int64)
    draws = [gaussian_counts(counts, 1.0, 1e-6, 2.0) for _ in range(4)]
    sigma = draws[0].noise_scale
    assert sigma >= 1
    noise = np.concatenate([d.values for d in draws]).astype(np.float64)
    n = noise.size
    z = NormalDist().inv_cdf(1 - FAIL_PROB / 2)
    z_cf = z + (z * z - 1) * math.sqrt(8) / (6 * math.sqrt(n))
    assert abs(np.mean(noise**2) / sigma**2 - 1) <= z_cf * math.sqrt(2 / n)


# ---------------------------------------------------------------- post-processing

int_arrays = hnp.arrays(np.int64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
                        elements=st.integers(-1000, 1000))


@given(int_arrays)
def test_clip_nonnegative_only_raises_negatives_to_zero(values: np.ndarray) -> None:
    clipped = clip_nonnegative(values)
    assert clipped.shape == values.shape
    assert (clipped >= 0).all()
    assert np.array_equal(clipped[values >= 0], values[values >= 0])


@given(int_arrays)
def test_monotone_funnel_is_non_increasing_and_never_raises(values: np.ndarray) -> None:
    funnel = monotone_funnel(values)
    assert funnel.shape == values.shape
    assert (np.diff(funnel, axis=-1) <= 0).all()
    assert (funnel <= values).all()
    assert np.array_equal(funnel[..., 0], values[..., 0])
    assert np.array_equal(monotone_funnel(funnel), funnel)


@given(int_arrays)
def test_monotone_funnel_keeps_a_valid_funnel(values: np.ndarray) -> None:
    already = -np.sort(-values, axis=-1)  # non-increasing along the last axis
    assert np.array_equal(monotone_funnel(already), already)


def test_post_processing_keeps_pandas_labels() -> None:
    stages = pd.Series([100, 120, -3], index=["visit", "cart", "buy"], name="acme")
    shown = clip_nonnegative(monotone_funnel(stages))
    assert isinstance(shown, pd.Series)
    assert shown.to_dict() == {"visit": 100, "cart": 100, "buy": 0}
    assert shown.name == "acme"


# ---------------------------------------------------------------- contribution bounding

frames = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 6)), max_size=60).map(
    lambda rows: pd.DataFrame({"person": [p for p, _ in rows], "key": [k for _, k in rows],
                               "row": range(len(rows))}))
max_keys = st.integers(1, 4)
seeds = st.integers(0, 2**32 - 1)


def _key_counts(frame: pd.DataFrame) -> pd.Series:
    return frame.groupby("key").size().reindex(range(7), fill_value=0)


@settings(max_examples=150, deadline=None)
@given(frames, max_keys, seeds)
def test_bounding_invariants(frame: pd.DataFrame, k: int, seed: int) -> None:
    out, report = bound_contributions(frame, "person", "key", max_keys=k, seed=seed)
    assert (out.groupby("person")["key"].nunique() <= k).all()
    assert not out.duplicated(["person", "key"]).any()
    assert out.equals(frame.loc[out.index])  # rows are only removed, never invented or edited
    assert list(out.index) == sorted(out.index)  # input order kept
    kept = out.groupby("person")["key"].nunique()
    wanted = frame.groupby("person")["key"].nunique().clip(upper=k)
    assert kept.equals(wanted)  # nobody loses more keys than the bound requires
    assert report["rows_in"] - report["rows_out"] == (report["duplicate_rows_removed"]
                                                      + report["rows_over_limit"])
    assert report["persons_truncated"] == int((frame.groupby("person")["key"].nunique()
                                               > k).sum())
    again, _ = bound_contributions(frame, "person", "key", max_keys=k, seed=seed)
    assert again.equals(out)  # the seed makes it reproducible


@settings(max_examples=150, deadline=None)
@given(frames, st.lists(st.integers(0, 6), min_size=1, max_size=10), max_keys, seeds)
def test_one_person_moves_key_counts_by_at_most_the_sensitivity(
        frame: pd.DataFrame, new_keys: list[int], k: int, seed: int) -> None:
    """Adding a person changes bounded per-key counts by <= sensitivity_for(k) in L1,
    and nobody else's kept rows change (the selection is per person)."""
    newcomer = pd.DataFrame({"person": 99, "key": new_keys,
                             "row": range(len(frame), len(frame) + len(new_keys))})
    bigger = pd.concat([frame, newcomer], ignore_index=True)
    small, _ = bound_contributions(frame, "person", "key", max_keys=k, seed=seed)
    large, _ = bound_contributions(bigger, "person", "key", max_keys=k, seed=seed)
    change = (_key_counts(large) - _key_counts(small)).abs().sum()
    assert change <= sensitivity_for(k)
    assert large[large["person"] != 99].equals(small)


def test_bounding_reports_missing_ids_and_rejects_bad_arguments() -> None:
    frame = pd.DataFrame({"person": ["a", "a", None, "b", "a"], "key": [1, 1, 2, 3, 4]})
    out, report = bound_contributions(frame, "person", "key", max_keys=1, seed=1)
    assert report == {"rows_in": 5, "rows_out": 2, "rows_missing_person": 1,
                      "duplicate_rows_removed": 1, "rows_over_limit": 1, "persons": 2,
                      "persons_truncated": 1, "max_keys": 1}
    assert sorted(out["person"]) == ["a", "b"]
    with pytest.raises(DPError, match="max_keys"):
        bound_contributions(frame, "person", "key", max_keys=0)
    with pytest.raises(DPError, match="no column"):
        bound_contributions(frame, "customer", "key", max_keys=1)
    assert sensitivity_for(3) == 3
    assert l2_sensitivity_for(4) == 2.0
