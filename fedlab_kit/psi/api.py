"""``psi()``: align customers with peers, from a notebook or the CLI."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import multiprocessing as mp
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..errors import FedlabError
from ..net.driver import run, stopping
from ..net.session import Party
from ..orphans import exit_with_parent
from .buckets import BucketStore
from .dataset import PartitionedIds
from .ids import DuplicatePolicy, IdReport, Normalize, prepare_ids
from .kkrt import KkrtProtocol
from .plan import Plan, PlanProtocol, Resume
from .protocol import BATCH, PsiProtocol, Reveal

Method = Literal["auto", "ecdh", "kkrt"]
PROTOCOLS = ("auto", "ecdh", "kkrt")
PROTOCOL_NAMES = {"ecdh": "ECDH over Curve25519", "kkrt": "KKRT OT extension"}


@dataclass
class PsiResult:
    """What PSI gave this party.

    ``rows`` are positions into the input, in the order every party shares (row i is the
    same customer everywhere); ``None`` where the intersection was not revealed to us.
    ``size`` is the intersection size (-1 if not revealed to us).
    """

    rows: np.ndarray | None
    size: int
    sizes: dict[str, int]
    report: IdReport
    seconds: float
    ids: pd.Series | None = None
    buckets: int = 1
    buckets_resumed: int = 0  # finished in an earlier, interrupted run (from the checkpoint)
    protocol: str = "ecdh"  # the one that ran: "ecdh" or "kkrt"

    def align(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``frame`` (same length as the PSI input) in the shared order."""
        if self.rows is None:
            raise FedlabError("the intersection was not revealed to this party")
        if len(frame) != self.report.n_input:
            raise FedlabError(f"frame has {len(frame)} rows; PSI ran on {self.report.n_input}")
        return frame.iloc[self.rows].reset_index(drop=True)

    def summary(self) -> str:
        sizes = ", ".join(f"{p}: {n}" for p, n in sorted(self.sizes.items()))
        got = "not revealed to us" if self.size < 0 else f"{self.size} common IDs"
        return (f"PSI: {got} (input sizes, known to all: {sizes}) in {self.seconds:.1f} s "
                f"({PROTOCOL_NAMES[self.protocol]}). {self.report.summary()}")


ProgressFn = Callable[[str, int, int], None]
BUCKET_SIZE = 1_000_000
ONE_BUCKET = 2**62  # a bucket size no set reaches


WORKER_MODULES = {"ecdh": "fedlab_kit.psi.curve", "kkrt": "fedlab_kit.psi.ote"}


def worker_pool(workers: int | None = None, protocols: Iterable[str] = WORKER_MODULES
                ) -> ProcessPoolExecutor:
    """The hashing and curve workers of one PSI run (they exit if this process is killed).

    They start at once and import the modules of ``protocols``' jobs while the run is being
    planned, instead of when the first batch arrives."""
    n = workers or os.cpu_count() or 1
    pool = ProcessPoolExecutor(n, mp_context=mp.get_context("spawn"),
                               initializer=exit_with_parent)
    for _ in range(n):
        for p in protocols:
            pool.submit(importlib.import_module, WORKER_MODULES[p])
    return pool


def _fingerprint(ids: Any) -> str:
    series = ids if isinstance(ids, pd.Series) else pd.Series(list(ids), dtype=object)
    hashed = pd.util.hash_pandas_object(series.astype(object), index=False).to_numpy()
    return f"{len(series)}:{hashlib.sha256(hashed.tobytes()).hexdigest()}"


def psi(
    party: Party, ids: Iterable[Any] | pd.Series, *, peers: list[str] | None = None,
    reveal: Reveal = "intersection", receivers: list[str] | None = None,
    duplicates: DuplicatePolicy = "raise", normalize: Normalize = None,
    session: str = "psi", workers: int | None = None, progress: ProgressFn | None = None,
    timeout: float | None = 600.0, batch: int = BATCH, bucket_size: int = BUCKET_SIZE,
    checkpoint_dir: str | os.PathLike[str] | None = None, protocol: Method = "auto",
) -> PsiResult:
    """Private set intersection of ``ids`` with ``peers`` (default: every peer in the room).

    ``ids``: a column (Series, list, array) or a :class:`~fedlab_kit.psi.PartitionedIds`
    (a folder or glob of Parquet / CSV files, read one partition at a time: the column
    never has to fit in memory; the result's rows are positions in the dataset).

    Every party calls this with the same ``peers`` (as a set, itself included implicitly),
    ``reveal``, ``receivers``, ``session`` and ``bucket_size``. Sets larger than
    ``bucket_size`` are split into hash buckets on disk and intersected bucket by bucket;
    ``reveal="cardinality"`` always runs one bucket (the sets in memory), so that only the
    total count is revealed.
    With ``checkpoint_dir``, finished buckets are kept there: after a crash, calling ``psi``
    again with the same arguments resumes at the first bucket not every party finished.
    Scalar multiplications run in a pool of ``workers`` processes (default: every core), or
    on the party's cluster if it has one (``Party(..., cluster=...)``).

    ``protocol``: ``"ecdh"`` (two or three parties, X25519) or ``"kkrt"`` (two parties, OT
    extension, :mod:`fedlab_kit.psi.kkrt`: much faster; reveals the intersection, so not
    with ``reveal="cardinality"``); ``"auto"`` (default): KKRT for two parties revealing
    the intersection, ECDH otherwise. Every party passes the same one.
    """
    started = time.monotonic()
    peers = list(peers if peers is not None else party.peers)
    unknown = [p for p in peers if p not in party.peers]
    if unknown:
        raise FedlabError(f"PSI peers {unknown} are not in this room; peers: {party.peers}")
    parties = sorted([party.name, *peers])
    protocol = choose_protocol(protocol, len(parties), reveal)
    partitioned = isinstance(ids, PartitionedIds)  # read partition by partition, never whole
    if not partitioned and not isinstance(ids, pd.Series | list | tuple | np.ndarray | pd.Index):
        ids = list(ids)
    if reveal == "cardinality":
        # one bucket: per-bucket counts would tell, for a hash partition every party knows,
        # how many common IDs each bucket holds (with small buckets, nearly which ones)
        bucket_size = ONE_BUCKET
    store = BucketStore(checkpoint_dir) if checkpoint_dir is not None else None
    owner = f"party {party.name!r} in room {party.aio.invitation.room!r}"
    options = {"session": session, "parties": parties, "reveal": reveal,
               "receivers": sorted(receivers or parties), "normalize": normalize,
               "duplicates": duplicates, "bucket_size": bucket_size,
               "fingerprint": "" if store is None else
               ids.fingerprint() if partitioned else _fingerprint(ids),
               "protocol": protocol}
    with contextlib.ExitStack() as stack:
        if store is not None:
            stack.enter_context(store.held(owner))
        state = store.load_state() if store is not None else None
        resume = None
        if state is not None and state.get("options") == options:
            resume = Resume(bytes.fromhex(state["tag"]), state["n_buckets"],
                            frozenset(state["done"]))
        on = getattr(party, "workers", None)  # the party's cluster, if it chose one
        pool = stack.enter_context(worker_pool(workers, [protocol]) if on is None
                                   else on.executor(workers))
        # an error at any step (bad options, duplicate IDs...) stops the peers where they are
        where = stack.enter_context(stopping(party, peers, session=f"{session}/plan",
                                             protocol="PSI"))
        _protocol(protocol, party.name, parties, [], reveal, receivers, batch)  # checks
        plan: Plan = run(party, PlanProtocol(party.name, parties, len(ids), bucket_size, resume),
                         session=f"{session}/plan", timeout=timeout, watch=peers)
        first = min(set(range(plan.n_buckets)) - plan.done, default=0)
        where.session = f"{session}/{plan.attempt}/b{first}"
        memory: dict[int, tuple[list[bytes], np.ndarray]] = {}
        if plan.resumed:
            assert state is not None and store is not None
            report = IdReport(**state["report"])
        elif plan.n_buckets == 1 and store is None and not partitioned:
            keys, rows, report = prepare_ids(ids, duplicates=duplicates, normalize=normalize)
            memory[0] = (keys, rows)
        else:
            if store is None:
                store = BucketStore(stack.enter_context(tempfile.TemporaryDirectory()))
            report = store.partition(ids, plan.tag, plan.n_buckets, normalize=normalize,
                                     duplicates=duplicates)
            state = {"options": options, "tag": plan.tag.hex(), "n_buckets": plan.n_buckets,
                     "done": [], "report": asdict(report), "owner": owner}
            store.save_state(state)
        revealed = reveal == "intersection" and party.name in (receivers or parties)
        results: dict[int, tuple[np.ndarray | None, int]] = {}
        for k in range(plan.n_buckets):
            if k in plan.done:
                continue
            where.session = f"{session}/{plan.attempt}/b{k}"
            keys, rows = memory.pop(k) if k in memory else store.read_bucket(k)  # type: ignore[union-attr]
            proto = _protocol(protocol, party.name, parties, keys, reveal, receivers, batch,
                              plan.sizes)
            label = f"psi bucket {k + 1}/{plan.n_buckets}"
            outcome = run(party, proto, session=f"{session}/{plan.attempt}/b{k}",
                          timeout=timeout, executor=pool, watch=peers,
                          progress=None if progress is None else
                          (lambda _n, d, t, label=label: progress(label, d, t)))
            got = None if outcome.positions is None else rows[outcome.positions]
            if store is None:
                results[k] = (got, outcome.size)
                continue
            store.save_result(k, got, outcome.size)
            assert state is not None  # written when the buckets were made, or resumed
            state["done"] = sorted({*state["done"], k})
            store.save_state(state)
        if store is not None:
            input_rows, size = store.load_results(plan.n_buckets, revealed)
        else:
            input_rows, size = results[0]
    aligned_ids = None
    if input_rows is not None and isinstance(ids, pd.Series):
        aligned_ids = ids.iloc[input_rows]
    return PsiResult(input_rows, size, plan.sizes, report, time.monotonic() - started,
                     aligned_ids, plan.n_buckets, len(plan.done), protocol)



def _protocol(method: Method, me: str, parties: list[str], keys: list[bytes], reveal: Reveal,
              receivers: list[str] | None, batch: int, sizes: dict[str, int] | None = None
              ) -> PsiProtocol | KkrtProtocol:
    if method == "kkrt":  # a peer may announce at most its set size in the plan
        peer = next((p for p in parties if p != me), "")
        return KkrtProtocol(me, parties, keys, reveal=reveal, receivers=receivers,
                            peer_limit=None if sizes is None else sizes.get(peer))
    return PsiProtocol(me, parties, keys, reveal=reveal, receivers=receivers, batch=batch)


def choose_protocol(protocol: str, n_parties: int, reveal: str) -> Method:
    """``"auto"`` resolved (the same at every party: it depends only on the shared options)."""
    if protocol not in PROTOCOLS:
        raise FedlabError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol == "auto":
        return "kkrt" if n_parties == 2 and reveal == "intersection" else "ecdh"
    return protocol  # type: ignore[return-value]
