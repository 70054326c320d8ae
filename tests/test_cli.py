"""The `fedlab` command line, as an analyst runs it (subprocesses over a relay process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fedlab_kit.demo.harness import RelayProcess

pytestmark = pytest.mark.e2e
FEDLAB = [sys.executable, "-m", "fedlab_kit.cli"]


def _fedlab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FEDLAB, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_keygen_invite_psi_files(tmp_path: Path) -> None:
    a = pd.DataFrame({"user_id": ["007", "b", "c", "d", None],
                      "spend": [1.5, 2.0, 3.0, 4.0, 5.0]})
    b = pd.DataFrame({"user_id": ["d", "007", "x", "c"], "seen": [1, 2, 3, 4]})
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_parquet(tmp_path / "b.parquet", index=False)
    cards = []
    for name in ("shop", "media"):
        res = _fedlab("keygen", name, "--out", f"{name}.key", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        cards.append(res.stdout.strip())
    with RelayProcess.start() as relay:
        res = _fedlab("invite", "--relay", f"{relay.host}:{relay.port}", "--room", "cli",
                      *cards, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        (tmp_path / "inv.txt").write_text(res.stdout)
        common = ["--invitation", "@inv.txt", "--column", "user_id"]
        procs = [subprocess.Popen([*FEDLAB, "psi", "--key", "shop.key", "--input", "a.csv",
                                   "--out", "a_aligned.csv", *common], cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
                 subprocess.Popen([*FEDLAB, "psi", "--key", "media.key", "--input",
                                   "b.parquet", "--out", "b_aligned.parquet", *common],
                                  cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)]
        outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    report = json.loads(outs[0][0])
    assert report["intersection"] == 3 and report["excluded"] == {"null": 1}
    got_a = pd.read_csv(tmp_path / "a_aligned.csv", dtype={"user_id": str})
    got_b = pd.read_parquet(tmp_path / "b_aligned.parquet")
    assert got_a["user_id"].tolist() == got_b["user_id"].tolist()
    assert sorted(got_a["user_id"]) == ["007", "c", "d"]  # leading zeros kept
    assert dict(zip(got_a.user_id, got_a.spend, strict=True))["d"] == 4.0


def test_psi_missing_column_is_a_clear_error(tmp_path: Path) -> None:
    pd.DataFrame({"id": ["a"]}).to_csv(tmp_path / "a.csv", index=False)
    res = _fedlab("keygen", "shop", "--out", "shop.key", cwd=tmp_path)
    card = res.stdout.strip()
    other = _fedlab("keygen", "media", "--out", "media.key", cwd=tmp_path).stdout.strip()
    inv = _fedlab("invite", "--relay", "127.0.0.1:1", card, other, cwd=tmp_path).stdout
    res = _fedlab("psi", "--key", "shop.key", "--invitation", inv.strip(), "--input", "a.csv",
                  "--column", "user_id", cwd=tmp_path)
    assert res.returncode == 1
    assert "no column 'user_id'" in res.stderr and "['id']" in res.stderr
    assert "Traceback" not in res.stderr


def test_invite_rejects_bad_relay_address(tmp_path: Path) -> None:
    card = _fedlab("keygen", "shop", "--out", "shop.key", cwd=tmp_path).stdout.strip()
    res = _fedlab("invite", "--relay", "nohost", card, card, cwd=tmp_path)
    assert res.returncode == 1 and "HOST:PORT" in res.stderr
    assert "Traceback" not in res.stderr


def test_psi_from_a_folder_of_files(tmp_path: Path) -> None:
    """One party gives a folder of Parquet parts: --out holds its dataset positions ("row",
    files in name order) in the order both parties share."""
    pd.DataFrame({"user_id": ["007", "b", "c", "d"]}).to_csv(tmp_path / "a.csv", index=False)
    (tmp_path / "parts").mkdir()
    parts = [["d", "zz"], ["007", "x", "c"]]
    for i, ids in enumerate(parts):
        pd.DataFrame({"user_id": ids}).to_parquet(tmp_path / "parts" / f"p{i}.parquet")
    cards = [_fedlab("keygen", n, "--out", f"{n}.key", cwd=tmp_path).stdout.strip()
             for n in ("shop", "media")]
    with RelayProcess.start() as relay:
        inv = _fedlab("invite", "--relay", f"{relay.host}:{relay.port}", *cards, cwd=tmp_path)
        (tmp_path / "inv.txt").write_text(inv.stdout)
        common = ["--invitation", "@inv.txt", "--column", "user_id"]
        procs = [subprocess.Popen([*FEDLAB, "psi", "--key", key, "--input", src, "--out", out,
                                   *common], cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
                 for key, src, out in (("shop.key", "a.csv", "a_aligned.csv"),
                                       ("media.key", "parts", "b_rows.csv"))]
        outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    got_a = pd.read_csv(tmp_path / "a_aligned.csv", dtype={"user_id": str})["user_id"]
    flat = [v for p in parts for v in p]
    rows = pd.read_csv(tmp_path / "b_rows.csv")["row"]
    assert [flat[r] for r in rows] == got_a.tolist()
    assert sorted(got_a) == ["007", "c", "d"]


def test_psi_folder_with_a_bad_file_names_it(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    pd.DataFrame({"user_id": ["a"]}).to_parquet(tmp_path / "parts" / "p0.parquet")
    (tmp_path / "parts" / "p1.parquet").write_bytes(b"broken")
    card = _fedlab("keygen", "shop", "--out", "shop.key", cwd=tmp_path).stdout.strip()
    other = _fedlab("keygen", "media", "--out", "media.key", cwd=tmp_path).stdout.strip()
    inv = _fedlab("invite", "--relay", "127.0.0.1:1", card, other, cwd=tmp_path).stdout
    res = _fedlab("psi", "--key", "shop.key", "--invitation", inv.strip(), "--input", "parts",
                  "--column", "user_id", cwd=tmp_path)
    assert res.returncode == 1 and "p1.parquet" in res.stderr
    assert "Traceback" not in res.stderr
