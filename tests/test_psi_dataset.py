"""PSI input from a folder or glob of Parquet / CSV files (PartitionedIds): reading, the
errors that name the bad file, and PSI end to end over the relay from such folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import psi_workers
import pytest
from party_processes import run_parties

from fedlab_kit.errors import InputError
from fedlab_kit.psi import PartitionedIds


def _write(folder: Path, parts: list[list[Any]], kind: str, column: str = "user_id") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, ids in enumerate(parts):
        frame = pd.DataFrame({column: ids, "other": range(len(ids))})
        if kind == "parquet":
            frame.to_parquet(folder / f"part-{i:03d}.parquet", index=False)
        else:
            frame.to_csv(folder / f"part-{i:03d}.csv", index=False)
    return folder


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_partitions_are_read_in_file_order_with_offsets(tmp_path: Path, kind: str) -> None:
    parts = [[f"a{i}" for i in range(n)] for n in (5, 0, 7, 3)]
    folder = _write(tmp_path / "ids", parts, kind)
    data = PartitionedIds(folder, "user_id")
    assert len(data) == 15
    got = [(offset, list(series)) for offset, series in data.chunks()]
    assert [v for _, chunk in got for v in chunk] == [v for p in parts for v in p]
    offsets = [o for o, chunk in got if len(chunk)]
    assert offsets == [0, 5, 12]
    same = PartitionedIds(str(folder / f"part-*.{kind}"), "user_id")  # a glob
    assert same.files == data.files


def test_csv_ids_stay_text(tmp_path: Path) -> None:
    folder = _write(tmp_path / "ids", [["00123", "7"], ["", "x"]], "csv")
    values = [v for _, chunk in PartitionedIds(folder, "user_id").chunks() for v in chunk]
    assert values[:2] == ["00123", "7"] and pd.isna(values[2]) and values[3] == "x"


def test_bad_files_are_named(tmp_path: Path) -> None:
    folder = _write(tmp_path / "ids", [["a", "b"], ["c"]], "parquet")
    (folder / "part-002.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match=r"part-002\.parquet"):
        PartitionedIds(folder, "user_id")
    os.remove(folder / "part-002.parquet")
    pd.DataFrame({"customer": ["z"]}).to_parquet(folder / "part-003.parquet")
    with pytest.raises(InputError, match=r"part-003.parquet.*no column 'user_id'"):
        PartitionedIds(folder, "user_id")
    with pytest.raises(InputError, match="no Parquet or CSV files"):
        PartitionedIds(tmp_path / "nothing-*.parquet", "user_id")
    (tmp_path / "mixed").mkdir()
    _write(tmp_path / "mixed", [["a"]], "csv")
    _write(tmp_path / "mixed2", [["b"]], "parquet")
    with pytest.raises(InputError, match="mixes Parquet and CSV"):
        PartitionedIds([tmp_path / "mixed" / "part-000.csv",
                        tmp_path / "mixed2" / "part-000.parquet"], "user_id")


def test_the_fingerprint_follows_the_files(tmp_path: Path) -> None:
    folder = _write(tmp_path / "ids", [["a", "b"], ["c"]], "parquet")
    before = PartitionedIds(folder, "user_id").fingerprint()
    assert PartitionedIds(folder, "user_id").fingerprint() == before
    pd.DataFrame({"user_id": ["c", "d"]}).to_parquet(folder / "part-001.parquet")
    assert PartitionedIds(folder, "user_id").fingerprint() != before


@pytest.mark.e2e
@pytest.mark.parametrize("protocol", ["kkrt", "ecdh"])
def test_psi_from_folders_of_files(tmp_path: Path, protocol: str) -> None:
    """Two parties, one with 4 Parquet files, one with 3 CSV files (one null, several
    buckets): the intersection and its order agree with the concatenated columns."""
    a_parts = [[f"id{i}" for i in range(k, 3000, 4)] for k in range(4)]
    b_parts = [[f"id{i}" for i in range(1500 + k, 4500, 3)] for k in range(3)]
    b_parts[1].append(None)
    sources = {"a": _write(tmp_path / "a", a_parts, "parquet"),
               "b": _write(tmp_path / "b", b_parts, "csv")}
    flat = {"a": [v for p in a_parts for v in p], "b": [v for p in b_parts for v in p]}
    res = dict(run_parties(tmp_path, ["a", "b"], lambda n, key, inv, q: (
        psi_workers.psi_files_party,
        (key, inv, str(sources[n]), "user_id", {"protocol": protocol, "bucket_size": 700},
         q))))
    truth = set(flat["a"]) & (set(flat["b"]) - {None})
    aligned = {n: [flat[n][i] for i in res[n]["rows"]] for n in res}
    assert aligned["a"] == aligned["b"] and set(aligned["a"]) == truth
    assert res["a"]["buckets"] == res["b"]["buckets"] > 1
    assert res["b"]["excluded"] == {"null": 1}
