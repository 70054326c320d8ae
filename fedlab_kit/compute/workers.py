"""The :class:`Workers` a party computes on, and :func:`open_workers` to choose them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

from ..errors import FedlabError


class ClusterError(FedlabError):
    """The party's compute cluster cannot be reached, or was lost during a run."""


class Workers:
    """Where a party's heavy work runs. Two kinds of work use it:

    - stateless jobs (PSI's hashing and curve batches): :meth:`executor`, a context manager
      over a :class:`concurrent.futures.Executor`;
    - keyed jobs (HE histograms and encryption), whose workers each build a state once
      (a context with keys, a mask cache): :meth:`keyed`, an object with ``map(fn, jobs)``
      running ``fn(key, *job)``, job ``i`` preferably on worker ``i % n``.
    """

    kind = "processes"

    def executor(self, n: int | None = None) -> contextlib.AbstractContextManager[Executor]:
        raise NotImplementedError

    def keyed(self, name: str, factory: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        raise NotImplementedError

    @property
    def n(self) -> int:
        """How many jobs run at once."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what :func:`open_workers` started (a local cluster); idempotent."""

    def describe(self) -> str:
        return f"{self.kind} ({self.n} workers)"


class ProcessWorkers(Workers):
    """This machine's cores, as spawned processes (the default)."""

    kind = "processes"

    def __init__(self, n: int | None = None) -> None:
        from ..he.pool import workers

        self._n = n or workers()

    @property
    def n(self) -> int:
        return self._n

    def executor(self, n: int | None = None) -> contextlib.AbstractContextManager[Executor]:
        from ..psi.api import worker_pool

        return worker_pool(n or self._n)

    def keyed(self, name: str, factory: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        from ..he.pool import KeyedPool

        return KeyedPool(name, factory, args)


class ExecutorWorkers(Workers):
    """Any :class:`~concurrent.futures.Executor` the caller owns (not shut down here).
    Keyed jobs carry their state's arguments and build the state once per worker
    process."""

    kind = "executor"

    def __init__(self, executor: Executor, n: int | None = None) -> None:
        if not isinstance(executor, Executor):
            raise FedlabError(f"executor must be a concurrent.futures.Executor, got "
                              f"{type(executor).__name__}")
        self._executor = executor
        self._n = n or getattr(executor, "_max_workers", None) or 1

    @property
    def n(self) -> int:
        return int(self._n)

    def executor(self, n: int | None = None) -> contextlib.AbstractContextManager[Executor]:
        return contextlib.nullcontext(self._executor)

    def keyed(self, name: str, factory: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        return _CarriedState(self._executor, name, factory, args, self.n)


class _CarriedState:
    """Keyed jobs on a plain executor: each job carries (factory, args)."""

    def __init__(self, executor: Executor, name: str, factory: Callable[..., Any],
                 args: tuple[Any, ...], n: int) -> None:
        import secrets

        self.key = f"{name}-{secrets.token_hex(8)}"
        self._executor, self._factory, self._args, self.n = executor, factory, args, n

    def map(self, fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]]) -> list[Any]:
        futures = [self._executor.submit(with_state, self.key, self._factory, self._args, fn,
                                         *job) for job in jobs]
        return [f.result() for f in futures]


def with_state(key: str, factory: Callable[..., Any], args: tuple[Any, ...],
               fn: Callable[..., Any], *job: Any) -> Any:
    """In a worker: build the state ``key`` if this process has not, then run the job."""
    from ..he.pool import _STATE, _init

    if key not in _STATE:
        _init(key, factory, args)
    return fn(key, *job)


def open_workers(cluster: str | Workers | None = None,
                 executor: Executor | None = None) -> Workers | None:
    """The workers for ``cluster`` or ``executor`` (at most one of them):

    - ``None``: ``None`` (each run starts this machine's process pools, as by default);
    - ``"processes"`` or ``"processes:N"``: this machine, N processes;
    - ``"local:N"``: a Dask ``LocalCluster`` of N single-threaded worker processes, started
      here and closed with the party;
    - ``"tcp://host:8786"`` (or ``tls://``, ``ws://``...): the Dask scheduler of the party's
      own cluster;
    - a :class:`Workers`, used as given.
    """
    if cluster is not None and executor is not None:
        raise FedlabError("give cluster= or executor=, not both")
    if executor is not None:
        return ExecutorWorkers(executor)
    if cluster is None or isinstance(cluster, Workers):
        return cluster
    if not isinstance(cluster, str) or not cluster.strip():
        raise FedlabError(f"cluster must be 'processes[:N]', 'local:N' or a Dask scheduler "
                          f"address such as 'tcp://scheduler:8786', got {cluster!r}")
    spec = cluster.strip()
    kind, _, count = spec.partition(":")
    if kind in ("processes", "local") and "//" not in spec:
        try:
            n = int(count) if count else None
        except ValueError:
            n = 0
        if n is not None and n < 1:
            raise FedlabError(f"cluster {spec!r}: the worker count must be a whole number "
                              f">= 1, as in '{kind}:4'")
        if kind == "processes":
            return ProcessWorkers(n)
        from .dask import DaskWorkers

        return DaskWorkers.local(n or ProcessWorkers().n)
    if "://" in spec:
        from .dask import DaskWorkers

        return DaskWorkers.connect(spec)
    raise FedlabError(f"cluster {spec!r} is not 'processes[:N]', 'local:N' or a Dask "
                      f"scheduler address such as 'tcp://scheduler:8786'")
