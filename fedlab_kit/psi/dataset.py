"""PSI input that need not fit in memory: an ID column in a folder or glob of Parquet or CSV
files, read one partition at a time through ``dask.dataframe`` (the ``dask`` extra).

``psi()`` splits such an input into its bucket files partition by partition, so the party's
process holds one partition (and then one bucket) at a time, never the whole column. Rows
of the result are positions in the dataset: files in sorted order, rows in file order.
In a CSV the ID column is read as text, as :func:`fedlab_kit.tables.read_table` does.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import FedlabError, InputError

SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".gz": "csv"}


class PartitionedIds:
    """The ``column`` of the Parquet or CSV files at ``source`` (a folder, a glob, a file or
    a list of files). Every file is checked up front: an unreadable one, or one without the
    column, is refused with its name."""

    def __init__(self, source: str | os.PathLike[str] | list[str | os.PathLike[str]],
                 column: str, *, blocksize: str | int = "64MB") -> None:
        self.column = column
        self.files = _files(source)
        kinds = {_kind(f) for f in self.files}
        if len(kinds) != 1:
            raise InputError(f"PSI input mixes Parquet and CSV files: {_names(self.files)}")
        self.kind = kinds.pop()
        for f in self.files:
            _check(f, self.kind, column)
        try:
            import dask.dataframe as dd
        except ImportError:  # pragma: no cover - the extra is part of the test setup
            raise FedlabError('partitioned PSI input needs dask: pip install '
                              '"fedlab-kit[dask]"') from None
        names = [str(f) for f in self.files]
        if self.kind == "parquet":
            self._frame = dd.read_parquet(names, columns=[column])
        else:
            self._frame = dd.read_csv(names, usecols=[column], dtype={column: str},
                                      blocksize=blocksize, keep_default_na=False,
                                      na_values=[""])
        self._lengths: list[int] | None = None

    @property
    def npartitions(self) -> int:
        return int(self._frame.npartitions)

    def lengths(self) -> list[int]:
        """Rows per partition (for Parquet from the files' metadata where dask can)."""
        if self._lengths is None:
            self._lengths = [int(n) for n in self._frame.map_partitions(len).compute(
                scheduler="threads")]
        return self._lengths

    def __len__(self) -> int:
        return sum(self.lengths())

    def chunks(self) -> Iterator[tuple[int, Any]]:
        """(offset of its first row, its IDs as a pandas Series), partition by partition."""
        offset = 0
        for i in range(self.npartitions):
            try:
                part = self._frame.get_partition(i).compute(scheduler="sync")[self.column]
            except Exception as exc:  # a file changed or broke since it was checked
                raise InputError(f"cannot read partition {i} of the PSI input "
                                 f"({_names(self.files)}): {exc}") from None
            yield offset, part
            offset += len(part)

    def fingerprint(self) -> str:
        """Names, sizes and modification times of the files (for checkpoints)."""
        h = hashlib.sha256(self.column.encode())
        for f in self.files:
            st = f.stat()
            h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return f"files:{len(self.files)}:{h.hexdigest()}"

    def __repr__(self) -> str:
        return f"PartitionedIds({_names(self.files)}, column={self.column!r})"


def _files(source: str | os.PathLike[str] | list[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(source, list | tuple):
        files = [Path(s).expanduser() for s in source]
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            files = [p for p in path.iterdir() if p.is_file() and _kind(p)]
        elif path.is_file():
            files = [path]
        else:
            files = [Path(p) for p in glob.glob(str(path)) if Path(p).is_file()]
    files = sorted(files)
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise InputError(f"PSI input files not found: {_names(missing)}")
    if not files:
        raise InputError(f"no Parquet or CSV files at {str(source)!r}")
    unknown = [f for f in files if not _kind(f)]
    if unknown:
        raise InputError(f"cannot read {_names(unknown)}: PSI input files end in .parquet, "
                         ".pq, .csv or .csv.gz")
    return files


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".csv.gz"):
        return "csv"
    return SUFFIXES.get(Path(name).suffix) if not name.endswith(".gz") else None


def _check(path: Path, kind: str, column: str) -> None:
    """Read the file's columns; refuse it, by name, if that fails or the column is absent."""
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            columns = pq.read_schema(path).names
        else:
            import pandas as pd

            columns = list(pd.read_csv(path, nrows=0).columns)
    except Exception as exc:
        raise InputError(f"cannot read the PSI input file {str(path)!r}: {exc}") from None
    if column not in columns:
        raise InputError(f"the PSI input file {str(path)!r} has no column {column!r}; its "
                         f"columns: {columns[:20]}")


def _names(files: list[Path]) -> str:
    shown = ", ".join(repr(str(f)) for f in files[:5])
    return shown + (f" and {len(files) - 5} more" if len(files) > 5 else "")
