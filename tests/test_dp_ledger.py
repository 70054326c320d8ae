"""Privacy ledger: persistence, refusal, exact accounting, concurrency, validation."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fedlab_kit.dp import BudgetExceeded, DPError, PrivacyLedger

STEP = 0.125  # a power of two: sums are exact, so "what fits" is unambiguous
TOTAL = 2.0  # fits exactly TOTAL / STEP = 16 spends


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "workspace" / "privacy_ledger.sqlite"


def test_budget_and_releases_survive_a_restart(path: Path) -> None:
    first = PrivacyLedger(path, 1.0, 1e-6, party="acme")
    first.spend("visits_by_region", "discrete_laplace", 0.25, noise_scale=4.0, meta={"k": 1})
    first.spend("funnel", "discrete_gaussian", 0.5, 5e-7, noise_scale=9.5)
    del first  # a kernel restart: nothing in memory survives, only the file

    again = PrivacyLedger(path, 1.0, 1e-6, party="acme")
    assert again.spent() == (0.75, 5e-7)
    assert again.remaining() == (0.25, 5e-7)
    frame = again.releases()
    assert list(frame.columns) == ["id", "time", "query", "mechanism", "noise_scale",
                                   "epsilon", "delta", "meta"]
    assert frame["query"].tolist() == ["visits_by_region", "funnel"]
    assert frame["noise_scale"].tolist() == [4.0, 9.5]
    assert json.loads(frame["meta"].iloc[0]) == {"k": 1}
    stamp = datetime.fromisoformat(frame["time"].iloc[0])
    assert stamp.utcoffset() == timedelta(0)

    reopened = PrivacyLedger.open(path)
    assert (reopened.party, reopened.total) == ("acme", (1.0, 1e-6))
    assert reopened.remaining() == (0.25, 5e-7)


def test_reopening_with_another_budget_or_party_is_refused(path: Path) -> None:
    PrivacyLedger(path, 1.0, party="acme")
    with pytest.raises(ValueError, match=r"total epsilon=1, delta=0.*epsilon=3"):
        PrivacyLedger(path, 3.0, party="acme")
    with pytest.raises(DPError, match="belongs to party 'acme'"):
        PrivacyLedger(path, 1.0, party="globex")
    assert PrivacyLedger(path, 1.0).party == "acme"  # no party given: the stored one


def test_open_needs_an_existing_ledger(tmp_path: Path) -> None:
    with pytest.raises(DPError, match="no privacy ledger"):
        PrivacyLedger.open(tmp_path / "missing.sqlite")
    assert not (tmp_path / "missing.sqlite").exists()


def test_overspend_is_refused_and_says_what_is_left(path: Path) -> None:
    ledger = PrivacyLedger(path, 1.0, party="acme")
    ledger.spend("a", "discrete_laplace", 0.7)
    with pytest.raises(BudgetExceeded, match=r"needs epsilon=0\.5.*only epsilon=0\.3") as info:
        ledger.spend("b", "discrete_laplace", 0.5)
    assert info.value.remaining[0] == pytest.approx(0.3)
    assert info.value.asked == (0.5, 0.0)
    assert len(ledger.releases()) == 1
    assert ledger.spent().epsilon == 0.7
    assert not ledger.can_spend(0.5)
    assert ledger.can_spend(0.3)


def test_delta_is_accounted_separately(path: Path) -> None:
    ledger = PrivacyLedger(path, 10.0, total_delta=1e-5)
    ledger.spend("g1", "discrete_gaussian", 1.0, 4e-6)
    ledger.spend("g2", "discrete_gaussian", 1.0, 4e-6)
    with pytest.raises(BudgetExceeded, match=r"delta=4e-06 but .* delta=2e-06 left"):
        ledger.spend("g3", "discrete_gaussian", 1.0, 4e-6)
    pure = PrivacyLedger(path.with_name("pure.sqlite"), 10.0)
    with pytest.raises(BudgetExceeded):
        pure.spend("g", "discrete_gaussian", 0.1, 1e-9)


def test_accounting_is_exact_over_many_spends(path: Path) -> None:
    ledger = PrivacyLedger(path, 1.0)
    ids = [ledger.spend(f"q{i}", "discrete_laplace", 0.1) for i in range(10)]
    assert ids == sorted(set(ids))
    assert ledger.remaining().epsilon == 0.0  # ten times 0.1 is the whole budget
    with pytest.raises(BudgetExceeded):
        ledger.spend("one too many", "discrete_laplace", 1e-9)

    odd = PrivacyLedger(path.with_name("odd.sqlite"), 1.0)
    for eps in (0.1, 0.2, 0.3):
        odd.spend("q", "discrete_laplace", eps)
    left = odd.remaining().epsilon
    assert left == pytest.approx(0.4, abs=1e-15)
    odd.spend("the rest", "discrete_laplace", left)  # exactly what is left still fits
    assert odd.remaining().epsilon == 0.0
    assert not odd.can_spend(1e-12)


@pytest.mark.parametrize("bad", [0, -0.5, math.nan, math.inf, -math.inf, "much"])
def test_bad_epsilon_is_rejected(path: Path, bad: Any) -> None:
    ledger = PrivacyLedger(path, 1.0)
    with pytest.raises(DPError, match="epsilon must be"):
        ledger.spend("q", "discrete_laplace", bad)
    with pytest.raises(DPError, match="epsilon must be"):
        ledger.can_spend(bad)
    with pytest.raises(DPError, match="total_epsilon must be"):
        PrivacyLedger(path.with_name("other.sqlite"), bad)
    assert ledger.releases().empty


@pytest.mark.parametrize("bad", [-1e-9, 1.0, 1.5, math.nan, math.inf])
def test_bad_delta_is_rejected(path: Path, bad: float) -> None:
    ledger = PrivacyLedger(path, 1.0, 0.5)
    with pytest.raises(DPError, match=r"delta must be in \[0, 1\)"):
        ledger.spend("q", "discrete_gaussian", 0.1, bad)
    with pytest.raises(DPError, match=r"total_delta must be in \[0, 1\)"):
        PrivacyLedger(path.with_name("other.sqlite"), 1.0, bad)
    assert ledger.releases().empty


def test_bad_release_fields_are_rejected(path: Path) -> None:
    ledger = PrivacyLedger(path, 1.0)
    with pytest.raises(DPError, match="query"):
        ledger.spend("  ", "discrete_laplace", 0.1)
    with pytest.raises(DPError, match="noise_scale"):
        ledger.spend("q", "discrete_laplace", 0.1, noise_scale=-1.0)
    with pytest.raises(DPError, match="JSON"):
        ledger.spend("q", "discrete_laplace", 0.1, meta={"x": object()})
    with pytest.raises(DPError, match="file path"):
        PrivacyLedger(":memory:", 1.0)
    assert ledger.releases().empty


def _try_spends(ledger: PrivacyLedger, attempts: int, who: str) -> tuple[int, int]:
    ok = refused = 0
    for i in range(attempts):
        try:
            ledger.spend(f"{who}-{i}", "discrete_laplace", STEP)
            ok += 1
        except BudgetExceeded:
            refused += 1
    return ok, refused


def _assert_exactly_what_fits(path: Path, results: list[tuple[int, int]],
                              attempts: int) -> None:
    fits = int(TOTAL / STEP)
    assert sum(ok + refused for ok, refused in results) == attempts
    assert sum(ok for ok, _ in results) == fits
    ledger = PrivacyLedger.open(path)
    assert ledger.spent().epsilon == TOTAL  # never more, and nothing left unused
    frame = ledger.releases()
    assert len(frame) == fits
    assert frame["id"].is_unique


def test_concurrent_spends_from_threads_never_overspend(path: Path) -> None:
    ledger = PrivacyLedger(path, TOTAL)
    threads, attempts = 8, 5  # 40 attempts, 16 fit
    start = threading.Barrier(threads)
    results: list[tuple[int, int]] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        start.wait()
        outcome = _try_spends(ledger, attempts, f"t{n}")
        with lock:
            results.append(outcome)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)
    assert len(results) == threads
    _assert_exactly_what_fits(path, results, threads * attempts)


def _spend_in_process(path: str, start: Any, attempts: int, who: str, out: Any) -> None:
    ledger = PrivacyLedger(path, TOTAL)  # every process opens the file itself
    start.wait(60)
    out.put(_try_spends(ledger, attempts, who))


def test_concurrent_spends_from_processes_never_overspend(path: Path) -> None:
    PrivacyLedger(path, TOTAL)
    ctx = mp.get_context("spawn")
    processes, attempts = 4, 7  # 28 attempts, 16 fit
    start, out = ctx.Barrier(processes + 1), ctx.Queue()
    pool = [ctx.Process(target=_spend_in_process, args=(str(path), start, attempts, f"p{n}",
                                                        out))
            for n in range(processes)]
    for proc in pool:
        proc.start()
    start.wait(120)  # all processes have opened the ledger: let them race
    results = [out.get(timeout=120) for _ in pool]
    for proc in pool:
        proc.join(30)
        assert proc.exitcode == 0
    _assert_exactly_what_fits(path, results, processes * attempts)
