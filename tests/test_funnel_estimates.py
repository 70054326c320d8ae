"""The released funnel after post-processing: consistent, monotone, and covering the truth.

The noise is OpenDP's (``laplace_counts``), laid out the way the media owner adds it under
encryption (exit noise, cumulated into stages, funnels and district totals); only the
decryption is skipped. Coverage bounds are binomial with the variance inflated 4 times
(the 4 stages of a funnel share noise), 4 standard deviations from the nominal rate.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedlab_kit.analytics import funnel as F
from fedlab_kit.analytics.encrypted_counts import CountsResult
from fedlab_kit.dp import laplace_counts
from fedlab_kit.dp.hierarchy import nonnegative_exits, reconcile, stages_from_exits

DISTRICTS, CAMPAIGNS = [f"D{i}" for i in range(10)], ["a", "b", "c"]


def _truth(rng: np.random.Generator, tight: bool = False) -> np.ndarray:
    """(D, C, G, S) true stage counts; ``tight``: repeat buyers are almost all buyers."""
    persons = rng.integers(300, 3000, (len(DISTRICTS), len(CAMPAIGNS), 2))
    visited = rng.binomial(persons, 0.2)
    bought = rng.binomial(visited, 0.6)
    repeat = bought - rng.integers(0, 3, bought.shape).clip(max=bought) if tight else \
        rng.binomial(bought, 0.5)
    return np.stack([persons, visited, bought, repeat], axis=-1)


def _released(true: np.ndarray, epsilon: float, share: float) -> CountsResult:
    n_c, copies = len(CAMPAIGNS), F._copies(len(CAMPAIGNS))
    sums = np.zeros((len(DISTRICTS), F._width(n_c)))
    detail = laplace_counts(np.zeros(true.shape, np.int64), epsilon * (1 - share), n_c)
    noisy = true + stages_from_exits(detail.values.astype(float))
    meta = {"districts": DISTRICTS, "campaigns": CAMPAIGNS, "copies": copies,
            "noise_scale": detail.noise_scale, "total_noise_scale": None, "epsilon": epsilon,
            "suppress_below": 10}
    for c in range(n_c):
        for g in range(2):
            for s in range(4):
                sums[:, F._slot(s, c, g, copies)] = noisy[:, c, g, s]
    if share > 0:
        tot = laplace_counts(np.zeros((len(DISTRICTS), 4), np.int64), epsilon * share, n_c)
        noisy_tot = true.sum(axis=(1, 2)) + stages_from_exits(tot.values.astype(float))
        for s in range(4):
            sums[:, F._total_slot(s, n_c, copies)] = noisy_tot[:, s]
        meta["total_noise_scale"] = tot.noise_scale
    return CountsResult(sums, meta)


def _inside(frame, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cells = frame[frame["level"] == "campaign"]
    t = true.reshape(-1)  # (district, campaign, group, stage), the frame's order
    ok = (cells["ci_low"].to_numpy() <= t) & (t <= cells["ci_high"].to_numpy())
    totals = frame[frame["level"] == "district"]
    tt = true.sum(axis=(1, 2)).reshape(-1)
    ok_t = (totals["ci_low"].to_numpy() <= tt) & (tt <= totals["ci_high"].to_numpy())
    return ok, ok_t


def _bound(n: int, p: float = 0.05) -> float:
    return n * p + 4 * math.sqrt(4 * n * p * (1 - p))


@pytest.mark.parametrize("share", [0.0, 0.25, 0.8])
def test_intervals_cover_after_post_processing(share: float) -> None:
    rng = np.random.default_rng(int(share * 100) + 1)
    misses = misses_t = n = n_t = 0
    for _ in range(12):
        true = _truth(rng)
        frame = F.funnel_frame(_released(true, 1.0, share))
        ok, ok_t = _inside(frame, true)
        misses, n = misses + int((~ok).sum()), n + ok.size
        misses_t, n_t = misses_t + int((~ok_t).sum()), n_t + ok_t.size
    assert misses <= _bound(n), (misses, n)
    assert misses_t <= _bound(n_t), (misses_t, n_t)


def test_last_stage_still_covers_when_repeat_is_close_to_purchase() -> None:
    rng = np.random.default_rng(5)
    misses = n = 0
    for _ in range(12):
        true = _truth(rng, tight=True)
        frame = F.funnel_frame(_released(true, 1.0, 0.25))
        ok, _ = _inside(frame, true)
        last = ok.reshape(-1, 4)[:, -1]
        misses, n = misses + int((~last).sum()), n + last.size
    assert misses <= n * 0.05 + 4 * math.sqrt(n * 0.05 * 0.95), (misses, n)


def test_post_processing_invariants() -> None:
    rng = np.random.default_rng(9)
    true = _truth(rng, tight=True)
    frame = F.funnel_frame(_released(true, 0.3, 0.5))  # large noise: constraints bind
    assert (frame["count"] >= 0).all() and (frame["ci_low"] >= 0).all()
    assert (frame["ci_low"] <= frame["count"]).all() and (frame["count"] <= frame["ci_high"]).all()
    for _, part in frame.groupby(["level", "campaign", "district_id", "group"], sort=False):
        assert (np.diff(part["count"].to_numpy()) <= 0).all()  # monotone stages
    cells = frame[frame["level"] == "campaign"]
    sums = cells.groupby(["district_id", "stage"], sort=False)["count"].sum()
    totals = frame[frame["level"] == "district"].set_index(["district_id", "stage"])["count"]
    assert (abs(totals - sums.reindex(totals.index)) <= 3).all()  # 6 roundings at most


def test_reconcile_and_projection() -> None:
    detail = np.array([[[10.0], [20.0], [-4.0]]])  # one total over 3 cells, one exit
    total = np.array([[32.0]])
    lin = reconcile(detail, total, var_detail=2.0, var_total=2.0)
    # inverse-variance weighting: the total moves 3/4 of the way to the direct estimate
    assert lin.sum() == pytest.approx(26 + 0.75 * (32 - 26))
    assert np.allclose(lin - detail, (lin - detail)[0, 0])  # equal cells share the gap
    out, tot = nonnegative_exits(lin, lin.sum(axis=-2))
    assert (out >= 0).all() and out.sum() == pytest.approx(tot.sum())
    assert out[0, 2, 0] == 0.0 and out[0, 0, 0] < lin[0, 0, 0]
