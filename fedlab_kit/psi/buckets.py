"""A party's PSI checkpoint: its IDs split into hash buckets on disk, and finished results.

Buckets are Arrow IPC files (``row``: input position, ``key``: encoded ID), so sets larger
than memory are intersected one bucket at a time with flat peak memory. ``state.json``
records the plan and the finished buckets; it is rewritten atomically after each bucket.
The directory is private to its party (it holds IDs in the clear): keep it like the data.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .ids import DuplicatePolicy, IdError, IdReport, Normalize, dedup, encode_ids
from .plan import bucket_of

SCHEMA = pa.schema([("row", pa.int64()), ("key", pa.binary())])
CHUNK = 500_000


class BucketStore:
    """Bucket files, results and state of one party's PSI run."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    @contextlib.contextmanager
    def held(self, owner: str) -> Iterator[None]:
        """Hold the folder for ``owner`` (party and room) while a run uses it: another
        process, or a checkpoint that another party or room wrote, is refused. Two parties
        sharing one folder would mix their buckets and reveal IDs outside the intersection."""
        path = self.root / "owner.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "?"
                raise IdError(f"the checkpoint folder {str(self.root)!r} is in use by "
                              f"another run ({holder}); give every party and run its own "
                              "folder") from None
            state = self.load_state()
            if state is not None and state.get("owner", owner) != owner:
                raise IdError(f"the checkpoint folder {str(self.root)!r} holds the checkpoint "
                              f"of {state['owner']}, not of {owner}; give every party its "
                              "own folder")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{owner}, pid {os.getpid()}".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    # ------------------------------------------------------------------ state
    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    def load_state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def save_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)

    # ---------------------------------------------------------------- buckets
    def _bucket_path(self, k: int) -> Path:
        return self.root / f"bucket-{k:05d}.arrow"

    def _result_path(self, k: int) -> Path:
        return self.root / f"result-{k:05d}.npy"

    def partition(
        self, ids: Sequence[Any], tag: bytes, n_buckets: int, *, normalize: Normalize,
        duplicates: DuplicatePolicy, on_chunk: Callable[[int, int], None] | None = None,
    ) -> IdReport:
        """Encode ``ids`` chunk by chunk into ``n_buckets`` files; then check duplicates.
        ``ids``: a sequence, or an object whose ``chunks()`` yields (offset, chunk), as
        :class:`~fedlab_kit.psi.dataset.PartitionedIds` does."""
        report = IdReport(0, 0)
        writers = [pa.ipc.new_stream(str(self._bucket_path(k)), SCHEMA)
                   for k in range(n_buckets)]
        chunks = ids.chunks() if hasattr(ids, "chunks") else (
            (start, ids[start:start + CHUNK]) for start in range(0, len(ids), CHUNK))
        total = len(ids)
        try:
            for start, chunk in chunks:
                keys, rows, report = encode_ids(chunk, normalize=normalize, offset=start,
                                                report=report)
                buckets = bucket_of(tag, keys, n_buckets)
                order = np.argsort(buckets, kind="stable")
                bounds = np.searchsorted(buckets[order], np.arange(n_buckets + 1))
                key_arr = np.asarray(keys, dtype=object)[order]
                for k in range(n_buckets):
                    lo, hi = bounds[k], bounds[k + 1]
                    if hi > lo:
                        writers[k].write_batch(pa.record_batch(
                            [pa.array(rows[order[lo:hi]]), pa.array(key_arr[lo:hi],
                                                                    type=pa.binary())],
                            schema=SCHEMA))
                if on_chunk is not None:
                    on_chunk(min(start + len(chunk), total), total)
        finally:
            for w in writers:
                w.close()
        counted = IdReport(0, 0)  # duplicates always share a bucket: count them all first
        for k in range(n_buckets):
            keys, rows = self.read_bucket(k)
            kept_keys, kept_rows = dedup(keys, rows, "first", counted)
            if len(kept_keys) != len(keys) and duplicates == "first":
                self.write_bucket(k, kept_keys, kept_rows)
        n_dupes = counted.excluded.get("duplicate", 0)
        if n_dupes and duplicates == "raise":
            raise IdError(
                f"{n_dupes} duplicate IDs (e.g. {counted.examples['duplicate']}); PSI needs one "
                "row per customer: deduplicate first, or pass duplicates='first' to keep the "
                "first occurrence")
        if n_dupes:
            report.excluded["duplicate"] = n_dupes
            report.examples["duplicate"] = counted.examples["duplicate"]
            report.n_used -= n_dupes
            for what, n in counted.types.items():  # type counts of the IDs that take part
                report.types[what] = report.types.get(what, 0) + n
        return report

    def write_bucket(self, k: int, keys: list[bytes], rows: np.ndarray) -> None:
        with pa.ipc.new_stream(str(self._bucket_path(k)), SCHEMA) as w:
            w.write_batch(pa.record_batch([pa.array(rows), pa.array(keys, type=pa.binary())],
                                          schema=SCHEMA))

    def read_bucket(self, k: int) -> tuple[list[bytes], np.ndarray]:
        with pa.ipc.open_stream(str(self._bucket_path(k))) as reader:
            table = reader.read_all()
        return table.column("key").to_pylist(), table.column("row").to_numpy()

    # ---------------------------------------------------------------- results
    def save_result(self, k: int, rows: np.ndarray | None, size: int) -> None:
        np.save(self._result_path(k), rows if rows is not None else np.array([size]))

    def load_results(self, n_buckets: int, revealed: bool) -> tuple[np.ndarray | None, int]:
        parts = [np.load(self._result_path(k)) for k in range(n_buckets)]
        if revealed:
            rows = np.concatenate(parts) if parts else np.empty(0, np.int64)
            return rows, len(rows)
        sizes = [int(p[0]) for p in parts]
        return None, -1 if any(s < 0 for s in sizes) else sum(sizes)
