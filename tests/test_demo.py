"""`fedlab demo`, the quick start's main job, end to end on the shipped sample."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from fedlab_kit.data import load_sample
from fedlab_kit.demo import run_demo

pytestmark = pytest.mark.e2e


def test_demo_writes_aligned_rows_and_a_dp_map(tmp_path: Path) -> None:
    lines: list[str] = []
    summary = run_demo(tmp_path, echo=lines.append)
    assert summary["stages"] == ["rollcall", "psi", "dp-crowd-own"]
    common = set.intersection(*(set(load_sample(r)["user_id"])
                                for r in ("retailer", "media", "operator")))
    assert summary["psi"]["intersection"] == len(common)
    ids = [pd.read_parquet(tmp_path / f"{r}_aligned.parquet")["user_id"].tolist()
           for r in ("retailer", "media", "operator")]
    assert ids[0] == ids[1] == ids[2] and set(ids[0]) == common
    crowd = summary["operator_crowd"]
    assert crowd["epsilon_left"] == pytest.approx(1.0)
    html = (tmp_path / "operator_crowd.html").read_text()
    assert "leaflet" in html.lower() and 'src="http' not in html
    png = (tmp_path / "operator_crowd.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    cells = pd.read_csv(tmp_path / "operator_crowd.csv")
    assert len(cells) == crowd["cells"] and (cells["count"] >= 0).all()
    assert json.loads((tmp_path / "summary.json").read_text())["psi"] == summary["psi"]
    assert any("DP crowd" in line for line in lines)
