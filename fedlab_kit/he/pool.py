"""Process pools for HE work: SEAL keeps the GIL, so cores are used through processes.

Each pool loads its keys once per worker (initializer) and jobs then move only ciphertext
bytes and small numpy arrays. A label holder's pool holds its secret key in its own worker
processes (same machine, same organisation); a feature holder's pool holds public keys only.
Small jobs run inline: starting workers costs about a second. Job ``i`` of a batch always
goes to worker ``i % n``, so a worker may keep per-job caches across batches.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import multiprocessing.util
import os
import secrets
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

from ..orphans import exit_with_parent

_STATE: dict[str, Any] = {}


def workers() -> int:
    """Worker processes per pool: the cores this process may use (at most 8)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def _init(key: str, factory: Callable[..., Any], args: tuple[Any, ...]) -> None:
    _STATE[key] = factory(*args)


def _init_worker(key: str, factory: Callable[..., Any], args: tuple[Any, ...]) -> None:
    exit_with_parent()
    _init(key, factory, args)


def state(key: str) -> Any:
    """The object a worker's initializer built (e.g. a context with keys)."""
    return _STATE[key]


class KeyedPool:
    """Lazily started worker processes that each build ``factory(*args)`` once.

    ``name`` is a label: each pool's key gets a random suffix, so a new pool never finds
    the state of an old one (an ``id()`` reused after garbage collection once made a new
    label holder encrypt inline under the previous one's secret key). The inline state
    goes with the pool."""

    def __init__(self, name: str, factory: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.key = f"{name}-{secrets.token_hex(8)}"
        self.factory, self.args = factory, args
        self._workers: list[Executor] = []
        weakref.finalize(self, _STATE.pop, self.key, None)

    @property
    def n(self) -> int:
        """Jobs that run at once (this machine's cores, at most 8)."""
        return workers()

    def executors(self) -> list[Executor]:
        """One single-process executor per worker (jobs are routed, not queued)."""
        if not self._workers:
            ctx = mp.get_context("spawn")
            self._workers = [ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_worker,
                                                 initargs=(self.key, self.factory, self.args))
                             for _ in range(workers())]
            for ex in self._workers:
                weakref.finalize(self, ex.shutdown, wait=False, cancel_futures=True)
                # and at exit, before a spawned process joins its children (which waits for
                # ever on the workers of a pool still referenced, e.g. by a traceback) and
                # before its queues close (priority 10)
                mp.util.Finalize(ex, ex.shutdown, kwargs={"wait": True,
                                                          "cancel_futures": True},
                                 exitpriority=100)
        return self._workers

    def map(self, fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]]) -> list[Any]:
        """``fn(key, *job)`` for every job, job ``i`` in worker ``i % n`` when there is more
        than one job, inline otherwise."""
        if len(jobs) <= 1 or workers() == 1:
            if self.key not in _STATE:
                _init(self.key, self.factory, self.args)
            return [fn(self.key, *job) for job in jobs]
        pool = self.executors()
        futures = [pool[i % len(pool)].submit(fn, self.key, *job) for i, job in enumerate(jobs)]
        return [f.result() for f in futures]


def keyed_pool(name: str, factory: Callable[..., Any], args: tuple[Any, ...],
               on: Any = None) -> Any:
    """A :class:`KeyedPool` on this machine, or the keyed jobs of ``on`` (a party's
    :class:`~fedlab_kit.compute.Workers`, e.g. its Dask cluster)."""
    return KeyedPool(name, factory, args) if on is None else on.keyed(name, factory, args)


def balanced_chunks(costs: Sequence[float], n: int) -> list[list[int]]:
    """Split item indices into at most ``n`` contiguous, non-empty chunks of similar total
    cost: each boundary where the running total comes closest to its share."""
    n = min(n, len(costs))
    if n <= 0:
        return []
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + float(c))
    bounds = [0]
    for j in range(1, n):
        target = prefix[-1] * j / n
        # the j-th boundary leaves room for one item in each chunk after it
        lo, hi = bounds[-1] + 1, len(costs) - (n - j)
        bounds.append(min(range(lo, hi + 1), key=lambda e: (abs(prefix[e] - target), e)))
    bounds.append(len(costs))
    return [list(range(a, b)) for a, b in itertools.pairwise(bounds)]
