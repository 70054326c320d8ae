"""Joint analytics over a relay process: a refused party stops the others with its reason."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import joint_workers
import pytest

from fedlab_kit.local import RelayProcess, create_room

pytestmark = pytest.mark.e2e
CTX = mp.get_context("spawn")


def _run(tmp_path: Path, budget: float) -> dict[str, tuple]:
    with RelayProcess.start() as relay:
        inv, keys = create_room(["retailer", "operator"], tmp_path, relay.host, relay.port)
        q = CTX.Queue()
        procs = [CTX.Process(target=joint_workers.crowd_party,
                             args=(r, str(keys[r]), inv.to_string(), str(tmp_path), budget, q))
                 for r in ("retailer", "operator")]
        for p in procs:
            p.start()
        results = {r: tuple(rest) for r, *rest in (q.get(timeout=300) for _ in procs)}
        for p in procs:
            p.join(60)
    return results


def test_joint_crowd_over_the_relay(tmp_path: Path) -> None:
    res = _run(tmp_path, budget=2.0)
    assert res["retailer"][0] == "ok" and res["operator"] == ("ok", pytest.approx(1.0))
    assert abs(res["retailer"][1] - 300) < 60  # 7 cells of ~43 TA visitors, noise scale 5


def test_refused_budget_stops_the_label_holder_with_the_reason(tmp_path: Path) -> None:
    res = _run(tmp_path, budget=0.5)
    kind, message = res["operator"]
    assert kind == "BudgetExceeded"
    kind, message = res["retailer"]
    assert kind == "PeerStopped"  # not a timeout: the operator told it why
    assert "'operator' stopped the joint computation: BudgetExceeded" in message


def test_misaligned_rows_stop_both_parties_with_the_reason(tmp_path: Path) -> None:
    with RelayProcess.start() as relay:
        inv, keys = create_room(["retailer", "operator"], tmp_path, relay.host, relay.port)
        q = CTX.Queue()
        procs = [CTX.Process(target=joint_workers.misaligned_party,
                             args=(r, str(keys[r]), inv.to_string(), str(tmp_path), q))
                 for r in ("retailer", "operator")]
        for p in procs:
            p.start()
        res = {r: (kind, msg) for r, kind, msg in (q.get(timeout=300) for _ in procs)}
        for p in procs:
            p.join(60)
    assert res["retailer"][0] == "ProtocolError" and "run PSI first" in res["retailer"][1]
    assert res["operator"][0] == "PeerStopped"  # told why, not left waiting for a timeout
    assert "'retailer' stopped the joint computation" in res["operator"][1]
    assert "run PSI first" in res["operator"][1]
