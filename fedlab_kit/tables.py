"""Reading and writing a party's own tables (CSV or Parquet)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .errors import FedlabError


def read_table(path: str | os.PathLike[str], id_column: str | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file; in a CSV the ID column is read as text, so IDs such as
    ``00123`` keep their zeros and match the same IDs held as text by other parties."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FedlabError(f"no data file at {str(path)!r}")
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    if name.endswith((".csv", ".csv.gz")):
        return pd.read_csv(path, dtype={id_column: str} if id_column else None)
    raise FedlabError(f"cannot read {path.name!r}: use a .csv or .parquet file")


def write_table(frame: pd.DataFrame, path: str | os.PathLike[str], *,
                private: bool = False) -> Path:
    """Write ``frame`` as Parquet or CSV (by the file name), creating the folder. With
    ``private`` (person-level rows), the file is created readable by its owner only (0600)
    and a new folder 0700: never readable by others, not even for a moment."""
    path = Path(path)
    path.parent.mkdir(mode=0o700 if private else 0o777, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o666)
    if private:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
    with os.fdopen(fd, "wb") as fh:
        if path.name.lower().endswith((".parquet", ".pq")):
            frame.to_parquet(fh, index=False)
        else:
            fh.write(frame.to_csv(index=False).encode("utf-8"))
    return path
