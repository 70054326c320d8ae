"""Joint analytics over a relay process: a refused party stops the others with its reason."""

from __future__ import annotations

from pathlib import Path

import joint_workers
import pytest
from party_processes import run_parties

pytestmark = pytest.mark.e2e


ROLES = ("retailer", "operator")


def _run(tmp_path: Path, budget: float) -> dict[str, tuple]:
    items = run_parties(tmp_path, ROLES, lambda r, key, inv, q: (
        joint_workers.crowd_party, (r, key, inv, str(tmp_path), budget, q)), clean_exit=False)
    return {r: tuple(rest) for r, *rest in items}


def test_joint_crowd_over_the_relay(tmp_path: Path) -> None:
    res = _run(tmp_path, budget=2.0)
    assert res["retailer"][0] == "ok" and res["operator"] == ("ok", pytest.approx(1.0))
    assert abs(res["retailer"][1] - 300) < 60  # 7 cells of ~43 TA visitors, noise scale 5


def test_refused_budget_stops_the_label_holder_with_the_reason(tmp_path: Path) -> None:
    res = _run(tmp_path, budget=0.5)
    kind, message = res["operator"]
    assert kind == "BudgetExceeded"
    kind, message = res["retailer"]
    assert kind == "PeerAborted"  # not a timeout: the operator told it why
    assert "'operator' stopped the joint count: release 'joint TA crowd" in message
    assert "refused" in message


def test_misaligned_rows_stop_both_parties_with_the_reason(tmp_path: Path) -> None:
    items = run_parties(tmp_path, ROLES, lambda r, key, inv, q: (
        joint_workers.misaligned_party, (r, key, inv, str(tmp_path), q)), clean_exit=False)
    res = {r: (kind, msg) for r, kind, msg in items}
    assert res["retailer"][0] == "ProtocolError" and "run PSI first" in res["retailer"][1]
    assert res["operator"][0] == "PeerAborted"  # told why, not left waiting for a timeout
    assert "'retailer' stopped the joint count" in res["operator"][1]
    assert "run PSI first" in res["operator"][1]
