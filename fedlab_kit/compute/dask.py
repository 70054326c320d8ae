"""A party's work on its own Dask cluster (``pip install "fedlab-kit[dask]"``).

Stateless jobs go through the client; keyed jobs find their state on the worker, built once
per worker by a :class:`~distributed.WorkerPlugin` (a worker that joins or replaces a killed
one builds it too), so only ciphertext bytes and small arrays travel with each job. A worker
killed mid-job: the scheduler runs the job again elsewhere. The scheduler lost: the job
fails with :class:`~fedlab_kit.compute.ClusterError`, and the protocol stops at every party
saying so.

What a keyed state holds travels to the party's own workers once: for the label holder that
is its BFV secret key, so its cluster must be its own (and its Dask comms TLS, ``tls://``,
when they cross machines).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import secrets
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

from .workers import ClusterError, Workers

try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ModuleNotFoundError:  # the extra is not installed: _distributed() says so
    WorkerPlugin = object  # type: ignore[assignment,misc]


def _distributed() -> Any:
    try:
        import distributed
    except ModuleNotFoundError:
        raise ClusterError('a Dask cluster needs dask.distributed: pip install '
                           '"fedlab-kit[dask]"') from None
    return distributed


#: Dask settings of a LocalCluster started here: no statistical profiler sampling every
#: worker thread every 10 ms (it costs CPU that the curve and HE jobs need)
QUIET = {"distributed.worker.profile.enabled": False}


class _StatePlugin(WorkerPlugin):  # type: ignore[misc]
    """Builds ``factory(*args)`` as the worker state ``key`` (read by
    :func:`fedlab_kit.he.pool.state`)."""

    def __init__(self, key: str, factory: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.key, self.factory, self.args = key, factory, args

    def setup(self, worker: Any = None) -> None:
        from ..he.pool import _init

        _init(self.key, self.factory, self.args)

    def teardown(self, worker: Any = None) -> None:
        from ..he.pool import _STATE

        _STATE.pop(self.key, None)


class DaskWorkers(Workers):
    """The workers of a Dask cluster, through a :class:`distributed.Client`."""

    kind = "dask"

    def __init__(self, client: Any, cluster: Any = None) -> None:
        self.client = client
        self._cluster = cluster  # a LocalCluster we started (closed with us)
        self.address = str(client.scheduler.address)

    @classmethod
    def local(cls, n: int) -> DaskWorkers:
        """A ``LocalCluster`` of ``n`` single-threaded worker processes on this machine."""
        distributed = _distributed()
        import dask

        with dask.config.set(QUIET):
            cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                               dashboard_address=":0")
        return cls(distributed.Client(cluster), cluster)

    @classmethod
    def connect(cls, address: str, timeout: float = 30.0) -> DaskWorkers:
        """The party's own cluster, by its scheduler's address."""
        distributed = _distributed()
        try:
            client = distributed.Client(address, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        return cls(client)

    @property
    def n(self) -> int:
        return max(1, len(self._addresses()))

    def _addresses(self) -> list[str]:
        try:
            return sorted(self.client.scheduler_info()["workers"])
        except Exception as exc:
            raise self._lost(exc) from exc

    def _lost(self, exc: BaseException) -> BaseException:
        """``exc`` as a ClusterError when it says the cluster is gone, else as it is."""
        from distributed.comm import CommClosedError

        gone = isinstance(exc, OSError | TimeoutError | CommClosedError
                          | concurrent.futures.CancelledError)
        if gone or self.client.status not in ("running", "connecting"):
            return ClusterError(f"the Dask cluster at {self.address} was lost during the run "
                                f"({type(exc).__name__}: {exc}); start it again and rerun")
        return exc

    def executor(self, n: int | None = None) -> contextlib.AbstractContextManager[Executor]:
        return contextlib.nullcontext(_ClusterExecutor(self))

    def keyed(self, name: str, factory: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        return DaskKeyedPool(self, name, factory, args)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.close()
            self._cluster = None

    def describe(self) -> str:
        where = "a local Dask cluster" if self._cluster is not None else "Dask"
        return f"{where} at {self.address} ({self.n} workers)"


class _ClusterExecutor(Executor):
    """The cluster as a :class:`concurrent.futures.Executor` whose futures raise
    :class:`ClusterError` when the cluster goes."""

    def __init__(self, workers: DaskWorkers) -> None:
        self._workers = workers

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
               ) -> concurrent.futures.Future[Any]:
        out: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            fut = self._workers.client.submit(fn, *args, pure=False, **kwargs)
        except Exception as exc:
            raise self._workers._lost(exc) from exc

        def done(f: Any) -> None:
            if not out.set_running_or_notify_cancel():
                return
            try:
                out.set_result(f.result())
            except BaseException as exc:  # handed to the waiting side
                out.set_exception(self._workers._lost(exc))

        fut.add_done_callback(done)
        return out


class DaskKeyedPool:
    """Keyed jobs on the cluster: the state is built on every worker by a plugin; job ``i``
    goes to worker ``i % n`` (its mask cache), or any worker if that one is gone."""

    def __init__(self, workers: DaskWorkers, name: str, factory: Callable[..., Any],
                 args: tuple[Any, ...]) -> None:
        self.key = f"{name}-{secrets.token_hex(8)}"
        self._workers = workers
        self._registered = False
        self._plugin = _StatePlugin(self.key, factory, args)
        weakref.finalize(self, _unregister, workers.client, self.key)

    @property
    def n(self) -> int:
        return self._workers.n

    def map(self, fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]]) -> list[Any]:
        """``fn(key, *job)`` for every job. A job's data goes straight to its worker
        (scattered, not through the scheduler); a job whose worker is gone, or died with its
        data, runs with the data in the task on any worker."""
        client = self._workers.client
        try:
            if not self._registered:
                client.register_plugin(self._plugin, name=self.key)
                self._registered = True
            where = self._workers._addresses()
            futures: list[Any] = [None] * len(jobs)
            for w, addr in enumerate(where):
                mine = list(range(w, len(jobs), len(where)))
                if not mine:
                    continue
                try:
                    data = client.scatter([jobs[i] for i in mine], workers=[addr],
                                          direct=True, hash=False)
                except Exception:  # that worker is gone: its jobs carry their data
                    for i in mine:
                        futures[i] = client.submit(_run_job, fn, self.key, jobs[i],
                                                   pure=False)
                    continue
                for i, d in zip(mine, data, strict=True):
                    futures[i] = client.submit(_run_job, fn, self.key, d, pure=False,
                                               workers=[addr], allow_other_workers=True)
            out = []
            for i, f in enumerate(futures):
                try:
                    out.append(f.result())
                except Exception as exc:
                    if not _data_lost(exc):
                        raise
                    out.append(client.submit(_run_job, fn, self.key, jobs[i],
                                             pure=False).result())
            return out
        except ClusterError:
            raise
        except Exception as exc:
            raise self._workers._lost(exc) from exc


def _run_job(fn: Callable[..., Any], key: str, job: tuple[Any, ...]) -> Any:
    return fn(key, *job)


def _data_lost(exc: BaseException) -> bool:
    """The job's scattered data went with a killed worker (not an error of the job)."""
    from distributed import KilledWorker

    return isinstance(exc, KilledWorker | concurrent.futures.CancelledError) or (
        "lost" in str(exc).lower() and "dependenc" in str(exc).lower())


def _unregister(client: Any, key: str) -> None:
    with contextlib.suppress(Exception):
        if client.status == "running":
            client.unregister_worker_plugin(key)
