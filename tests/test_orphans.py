"""A party killed with SIGKILL leaves no worker behind (with its keys in memory)."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time

import orphan_workers
import pytest

CTX = mp.get_context("spawn")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone too (waiting for init)
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("kind", ["he", "psi"])
def test_workers_of_a_killed_party_exit(kind: str) -> None:
    q = CTX.Queue()
    pids: list[int] = []
    party = CTX.Process(target=orphan_workers.start_pools_and_wait, args=(kind, q))
    party.start()
    try:
        pids = q.get(timeout=120)
        assert pids and party.pid not in pids
        assert all(_alive(p) for p in pids)
        party.kill()  # SIGKILL: no finalizer, no executor shutdown runs
        party.join(10)
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [p for p in pids if _alive(p)]
        assert left == [], f"workers outlived their killed party: {left}"
    finally:
        party.kill()
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, 9)


def test_a_party_process_ends_while_its_pool_is_still_referenced() -> None:
    q = CTX.Queue()
    party = CTX.Process(target=orphan_workers.use_a_pool_and_return, args=(q,))
    party.start()
    pids = q.get(timeout=120)
    party.join(60)  # it hung here for ever: exit joined workers nobody had shut down
    alive = party.is_alive()
    party.kill()
    assert not alive and party.exitcode == 0, "the process did not end"
    assert not any(_alive(p) for p in pids)
