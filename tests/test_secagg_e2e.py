"""Secure aggregation end to end: each party an OS process, over a relay process on
loopback; a member killed mid-run is dropped and the sums go on without it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import secagg_workers
from party_processes import party_processes, run_parties

pytestmark = pytest.mark.e2e


def _check(result: dict[str, Any], rounds: int, size: int) -> None:
    for r, who in enumerate(result["included"]):
        want = np.sum([secagg_workers.vectors(n, rounds, size)[r] for n in who], axis=0)
        np.testing.assert_array_equal(result["totals"][r], want)


def test_four_parties_sum_over_the_relay(tmp_path: Path) -> None:
    names = ["chain-a", "chain-b", "chain-c", "chain-d"]
    res = dict(run_parties(tmp_path, names, lambda n, key, inv, q: (
        secagg_workers.secure_sum_party, (key, inv, names, 3, 500, 30.0, q))))
    for name in names:
        assert res[name]["included"] == [names] * 3, res[name]
        _check(res[name], 3, 500)


def test_a_member_killed_mid_run_is_dropped_and_the_others_go_on(tmp_path: Path) -> None:
    names = ["chain-a", "chain-b", "chain-c", "chain-d"]
    rounds, size = 400, 50
    with party_processes(tmp_path, names, lambda n, key, inv, q: (
            secagg_workers.secure_sum_party, (key, inv, names, rounds, size, 3.0, q, True))
            ) as (_, q, procs):
        while (item := q.get(timeout=120))[0] == "round" and item[1] < 3:
            pass
        procs[names.index("chain-d")].kill()
        got: dict[str, Any] = {}
        while len(got) < 3:
            item = q.get(timeout=300)
            if item[0] != "round":
                got[item[0]] = item[1]
        for p in procs[:3]:
            p.join(60)
            assert p.exitcode == 0
    for name in names[:3]:
        assert "error" not in got[name], got[name]
        inc = got[name]["included"]
        assert len(inc) == rounds and inc[0] == names and inc[-1] == names[:3], inc[-1]
        _check(got[name], rounds, size)
