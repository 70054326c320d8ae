"""A party's heavy work on its own Dask cluster: the same results as the process pools, a
killed worker retried, a lost scheduler a clear error at every party."""

from __future__ import annotations

import multiprocessing as mp
import random
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cluster_workers
import numpy as np
import pytest

from fedlab_kit.compute import ClusterError, ExecutorWorkers, ProcessWorkers, open_workers
from fedlab_kit.demo.harness import RelayProcess, create_room
from fedlab_kit.errors import FedlabError

pytestmark = pytest.mark.e2e
CTX = mp.get_context("spawn")


def _collect(q: Any, names: set[str], timeout: float = 300) -> tuple[dict[str, Any], list[int]]:
    """The final item of each of ``names`` (and the trees reported on the way)."""
    got: dict[str, Any] = {}
    trees: list[int] = []
    deadline = time.monotonic() + timeout
    while set(got) != names:
        who, item = q.get(timeout=max(1.0, deadline - time.monotonic()))
        if who == "tree":
            trees.append(item)
        else:
            got[who] = item
    return got, trees


def test_psi_on_a_local_cluster_and_on_the_pool_agree(tmp_path: Path) -> None:
    rng = random.Random(3)
    universe = [f"u{i}" for i in range(20_000)]
    sets = {"a": rng.sample(universe, 8000), "b": rng.sample(universe, 9000)}
    with RelayProcess.start() as relay:
        inv, keys = create_room(list(sets), tmp_path, relay.host, relay.port)
        q = CTX.Queue()
        procs = [CTX.Process(target=cluster_workers.psi_on, args=(
            str(keys[n]), inv.to_string(), sets[n], "local:2" if n == "a" else None, q))
            for n in sets]
        for p in procs:
            p.start()
        res, _ = _collect(q, set(sets))
        for p in procs:
            p.join(60)
    assert res["a"]["kind"] == "dask" and res["b"]["kind"] == "default"
    assert res["a"]["aligned"] == res["b"]["aligned"]  # the same rows in the same order
    assert set(res["a"]["aligned"]) == set(sets["a"]) & set(sets["b"])


def _train(tmp_path: Path, cluster: str | None, kill_after_tree: int | None = None
           ) -> tuple[dict[str, Any], list[int]]:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(1500, 6))
    y = (X[:, 0] + X[:, 4] + rng.normal(size=1500) > 0).astype(int)
    with RelayProcess.start() as relay:
        inv, keys = create_room(["active", "media"], tmp_path, relay.host, relay.port)
        q = CTX.Queue()
        procs = [
            CTX.Process(target=cluster_workers.boost_on, args=(
                "active", str(keys["active"]), inv.to_string(),
                {"X": X[:, :3], "y": y, "passive": ["media"]}, cluster, None, q)),
            CTX.Process(target=cluster_workers.boost_on, args=(
                "passive", str(keys["media"]), inv.to_string(),
                {"X": X[:, 3:], "active": "active"}, cluster, kill_after_tree, q))]
        for p in procs:
            p.start()
        try:
            return _collect(q, {"active", "passive"})
        finally:
            for p in procs:
                p.join(60)
                if p.is_alive():
                    p.kill()


def test_encrypted_training_on_clusters_with_a_killed_worker_equals_the_pools(
        tmp_path: Path) -> None:
    pools, _ = _train(tmp_path / "pools", None)
    dask, _ = _train(tmp_path / "dask", "local:2", kill_after_tree=1)
    assert "error" not in pools["active"] and "error" not in dask["active"], (pools, dask)
    assert dask["passive"]["killed"], "the feature holder's worker was not killed"
    # BFV sums are exact: the same trees, so the same margins
    np.testing.assert_allclose(dask["active"]["margin"], pools["active"]["margin"], atol=1e-9)
    assert dask["passive"]["splits"] == pools["passive"]["splits"] > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_lost_scheduler_stops_the_run_at_every_party(tmp_path: Path) -> None:
    dask = shutil.which("dask", path=str(Path(sys.executable).parent))
    assert dask, "the dask command comes with the [dask] extra"
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    log = (tmp_path / "dask.log").open("w")
    scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port",
                                  str(port), "--no-dashboard"], stdout=log, stderr=log)
    worker = subprocess.Popen([dask, "worker", address, "--nworkers", "1", "--nthreads", "1",
                               "--no-dashboard"], stdout=log, stderr=log)
    try:
        rng = np.random.default_rng(6)
        X = rng.normal(size=(1500, 6))
        y = (X[:, 0] + rng.normal(size=1500) > 0).astype(int)
        with RelayProcess.start() as relay:
            inv, keys = create_room(["active", "media"], tmp_path, relay.host, relay.port)
            q = CTX.Queue()
            params = (None, q)
            procs = [
                CTX.Process(target=cluster_workers.boost_on, args=(
                    "active", str(keys["active"]), inv.to_string(),
                    {"X": X[:, :3], "y": y, "passive": ["media"]}, None, *params)),
                CTX.Process(target=cluster_workers.boost_on, args=(
                    "passive", str(keys["media"]), inv.to_string(),
                    {"X": X[:, 3:], "active": "active"}, address, *params))]
            for p in procs:
                p.start()
            who, item = q.get(timeout=300)
            assert who == "tree", (who, item)  # a first tree on the cluster, then it goes
            scheduler.kill()
            res, _ = _collect(q, {"active", "passive"}, timeout=300)
            for p in procs:
                p.join(60)
        assert res["passive"]["error"] == "ClusterError", res
        assert f"the Dask cluster at {address} was lost" in res["passive"]["message"], res
        assert res["active"]["error"] == "PeerAborted", res
        assert "Dask cluster" in res["active"]["message"], res
    finally:
        for proc in (worker, scheduler):
            proc.kill()
            proc.wait(10)
        log.close()


def test_cluster_choices_and_bad_ones() -> None:
    assert open_workers() is None
    assert isinstance(open_workers("processes:2"), ProcessWorkers)
    assert open_workers("processes:2").n == 2
    for bad, says in (("local:0", "whole number >= 1"), ("local:two", "whole number"),
                      ("hpc", "is not 'processes"), ("", "cluster must be")):
        with pytest.raises(FedlabError, match=says):
            open_workers(bad)
    with ThreadPoolExecutor(2) as ex, pytest.raises(FedlabError, match="not both"):
        open_workers("local:2", ex)
    with pytest.raises(FedlabError, match=r"concurrent\.futures\.Executor"):
        ExecutorWorkers(object())  # type: ignore[arg-type]


def test_an_unreachable_scheduler_is_a_clear_error() -> None:
    from fedlab_kit.compute.dask import DaskWorkers

    address = f"tcp://127.0.0.1:{_free_port()}"
    with pytest.raises(ClusterError, match=f"cannot reach the Dask scheduler at {address}"):
        DaskWorkers.connect(address, timeout=2)


def _state_and_pid(key: str, x: int) -> tuple[str, int]:
    from fedlab_kit.he.pool import state

    return state(key)["name"], x * 2


def test_keyed_jobs_on_any_executor_build_their_state_where_they_run() -> None:
    with ThreadPoolExecutor(2) as ex:
        keyed = ExecutorWorkers(ex).keyed("t", dict, ())
        keyed._factory, keyed._args = (lambda: {"name": "built"}), ()
        assert keyed.map(_state_and_pid, [(1,), (2,), (3,)]) == [
            ("built", 2), ("built", 4), ("built", 6)]
