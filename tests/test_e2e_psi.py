"""PSI end to end: each party an OS process, over a relay process on loopback."""

from __future__ import annotations

import multiprocessing as mp
import random
from pathlib import Path
from typing import Any

import psi_workers
import pytest
from party_processes import CTX, party_processes, run_parties

from fedlab_kit.demo.harness import RelayProcess, create_room

pytestmark = pytest.mark.e2e


def _run(tmp_path: Path, sets: dict[str, list[Any]], **kwargs: Any) -> dict[str, dict]:
    return dict(run_parties(tmp_path, list(sets), lambda n, key, inv, q: (
        psi_workers.psi_party, (key, inv, sets[n], kwargs, q))))


def _sets(rng: random.Random, names: list[str], universe: list[Any]) -> dict[str, list[Any]]:
    return {n: rng.sample(universe, rng.randrange(len(universe) // 3, len(universe)))
            for n in names}


@pytest.mark.parametrize("protocol", ["ecdh", "kkrt"])
def test_two_parties_match_python_sets(tmp_path: Path, protocol: str) -> None:
    rng = random.Random(5)
    universe = [f"客户-{i}-ü" for i in range(3000)] + list(range(3000))
    sets = _sets(rng, ["retailer", "media"], universe)
    truth = set(sets["retailer"]) & set(sets["media"])
    res = _run(tmp_path, sets, protocol=protocol, bucket_size=1000)  # several buckets
    assert res["retailer"]["aligned"] == res["media"]["aligned"]
    assert set(res["retailer"]["aligned"]) == truth
    assert res["retailer"]["size"] == len(truth) > 0
    assert res["media"]["sizes"] == {n: len(s) for n, s in sets.items()}
    assert res["media"]["protocol"] == protocol
    assert ("KKRT" if protocol == "kkrt" else "ECDH") in res["media"]["summary"]


def test_two_parties_run_kkrt_unless_told_otherwise(tmp_path: Path) -> None:
    sets = {"a": list(range(50)), "b": list(range(25, 80))}
    assert {r["protocol"] for r in _run(tmp_path, sets).values()} == {"kkrt"}
    counted = _run(tmp_path, sets, reveal="cardinality")  # KKRT cannot: ECDH
    assert {r["protocol"] for r in counted.values()} == {"ecdh"}
    assert counted["a"]["size"] == 25


def test_three_parties_and_dirty_input(tmp_path: Path) -> None:
    rng = random.Random(9)
    universe = [f"u{i}" for i in range(4000)]
    sets = _sets(rng, ["retailer", "media", "operator"], universe)
    sets["operator"] += [None, "", float("nan")]  # excluded, counted, never sent
    truth = set(sets["retailer"]) & set(sets["media"]) & set(sets["operator"])
    res = _run(tmp_path, sets)
    aligned = [res[n]["aligned"] for n in sets]
    assert aligned[0] == aligned[1] == aligned[2]
    assert set(aligned[0]) == truth
    assert res["operator"]["excluded"] == {"null": 2, "empty": 1}


def test_cardinality_only(tmp_path: Path) -> None:
    """The attack it rules out: with buckets of 50 IDs, counts per bucket of a hash
    partition every party knows would nearly say which IDs are common; cardinality mode
    runs one bucket and reveals one count."""
    sets = {"a": [f"x{i}" for i in range(500)], "b": [f"x{i}" for i in range(250, 900)]}
    res = _run(tmp_path, sets, reveal="cardinality", bucket_size=50)
    assert res["a"]["size"] == res["b"]["size"] == 250
    assert res["a"]["aligned"] is None and res["b"]["aligned"] is None
    assert res["a"]["buckets"] == res["b"]["buckets"] == 1


@pytest.mark.parametrize(("protocol", "bucket"), [("ecdh", 1500), ("kkrt", 150)])
def test_resume_after_killing_a_party(tmp_path: Path, protocol: str, bucket: int) -> None:
    import json
    import math
    import time

    rng = random.Random(11)
    universe = [f"id{i}" for i in range(30_000)]
    sets = {"a": rng.sample(universe, 18_000), "b": rng.sample(universe, 16_000)}
    truth = set(sets["a"]) & set(sets["b"])
    ckpt = {n: tmp_path / f"ckpt-{n}" for n in sets}
    kwargs = {n: {"bucket_size": bucket, "checkpoint_dir": str(ckpt[n]), "batch": 256,
                  "protocol": protocol} for n in sets}
    n_buckets = math.ceil(18_000 / bucket)  # KKRT buckets are fast: more of them
    with RelayProcess.start() as relay:
        inv, keys = create_room(list(sets), tmp_path, relay.host, relay.port)
        q = CTX.Queue()

        def start(n: str) -> mp.Process:
            p = CTX.Process(target=psi_workers.psi_until_done,
                            args=(str(keys[n]), inv.to_string(), sets[n], kwargs[n], q))
            p.start()
            return p

        a, b = start("a"), start("b")
        state = ckpt["b"] / "state.json"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if state.exists() and len(json.loads(state.read_text())["done"]) >= 3:
                break
            time.sleep(0.05)
        done_before = len(json.loads(state.read_text())["done"])
        b.kill()
        b.join(10)
        assert 3 <= done_before < n_buckets, "kill b while buckets remain"
        b2 = start("b")
        results: dict[str, dict] = {}
        retries = []
        while len(results) < 2:
            name, item = q.get(timeout=240)
            if "retry" in item:
                retries.append((name, item["error"]))
            else:
                results[name] = item
        for p in (a, b2):
            p.join(60)
            assert p.exitcode == 0
    assert results["a"]["buckets"] == results["b"]["buckets"] == n_buckets
    assert results["a"]["aligned"] == results["b"]["aligned"]
    assert set(results["a"]["aligned"]) == truth
    assert results["b"]["resumed"] >= 3, "the restarted party redid finished buckets"
    assert any(n == "a" and "'b'" in err for n, err in retries), retries


@pytest.mark.parametrize(("protocol", "n"), [("ecdh", 50_000), ("kkrt", 1_000_000)])
def test_relay_restart_during_psi(tmp_path: Path, protocol: str, n: int) -> None:
    """KKRT runs 1M x 1M, so that the relay's restart lands while it runs (over 5 s with one
    worker per party), as 50k x 50k do for ECDH."""
    import time

    rng = random.Random(21)
    universe = [f"k{i}" for i in range(2 * n)]
    sets = {"a": rng.sample(universe, n), "b": rng.sample(universe, n)}
    truth = set(sets["a"]) & set(sets["b"])
    kwargs = {"batch": 512, "protocol": protocol, "bucket_size": 2 * n}
    with party_processes(tmp_path, list(sets), lambda name, key, inv, q: (
            psi_workers.psi_party, (key, inv, sets[name], kwargs, q, True))
            ) as (relay, q, procs):
        assert sorted(q.get(timeout=120) for _ in procs) == [("started", "a"), ("started", "b")]
        time.sleep(1.0)  # 200k scalar multiplications take several seconds on 2 cores
        relay.kill()
        killed_at = time.monotonic()
        time.sleep(0.5)
        relay.restart()
        results = dict(q.get(timeout=300) for _ in procs)
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
    for r in results.values():
        assert r["t0"] < killed_at < r["t1"], "the relay was not killed during the PSI"
    assert results["a"]["aligned"] == results["b"]["aligned"]
    assert set(results["a"]["aligned"]) == truth
