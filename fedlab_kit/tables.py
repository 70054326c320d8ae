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


def write_table(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write ``frame`` as Parquet or CSV (by the file name), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.lower().endswith((".parquet", ".pq")):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path
