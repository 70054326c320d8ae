"""Processes for tests/test_orphans.py: a party that starts worker pools and waits."""

from __future__ import annotations

import os
import time
from typing import Any


def _pid(*_: Any) -> int:
    return os.getpid()


def _secret() -> bytes:
    return b"a secret key"


def start_pools_and_wait(kind: str, q: Any) -> None:
    """Start a pool the way the kit does (``kind``: "he" or "psi"), report the workers'
    pids, then wait to be killed."""
    if kind == "he":
        from fedlab_kit.he.pool import KeyedPool, workers

        pool = KeyedPool("test", _secret, ())
        pids = pool.map(_pid, [() for _ in range(2 * workers())])
    else:
        from fedlab_kit.psi.api import worker_pool

        ex = worker_pool(2)
        pids = [ex.submit(_pid).result() for _ in range(4)]
    q.put(sorted(set(pids)))
    time.sleep(600)


KEPT: list[object] = []


def use_a_pool_and_return(q: Any) -> None:
    """Run jobs on a KeyedPool that is still referenced when the process ends (as from a
    traceback kept by the caller)."""
    from fedlab_kit.he.pool import KeyedPool, workers

    pool = KeyedPool("test", _secret, ())
    KEPT.append(pool)
    q.put(sorted(set(pool.map(_pid, [() for _ in range(2 * workers())]))))
