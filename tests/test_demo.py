"""`fedlab demo`, the quick start's main job, end to end on the shipped sample."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from fedlab_kit.data import load_footfall, load_sample
from fedlab_kit.demo import run_demo

pytestmark = pytest.mark.e2e


def test_demo_writes_aligned_rows_and_a_dp_map(tmp_path: Path) -> None:
    lines: list[str] = []
    summary = run_demo(tmp_path, echo=lines.append)
    assert summary["stages"] == ["rollcall", "psi", "dp-funnel-joint", "psi-retailer-operator",
                                 "dp-ta-crowd-joint", "secureboost", "logistic-regression",
                                 "poi-crowd-regression", "dp-crowd-own"]
    training = summary["training"]
    assert training["auc_federated"] > training["auc_retailer_only"] + 0.03  # partners help
    assert any(f.startswith(("media:", "operator:")) for f in training["top_features"])
    lr = summary["logistic"]
    assert lr["auc_federated"] > lr["auc_retailer_only"] + 0.03 and lr["iterations"] >= 2
    assert any(k.startswith(("media:", "operator:")) for k in lr["weights"])
    assert any("Logistic regression" in line and "largest weights" in line for line in lines)
    poi = summary["poi_crowd"]
    assert poi["train_pois"] + poi["test_pois"] == len(load_footfall())  # every counted POI
    assert poi["p30_federated"] >= 0.9 and poi["p30_federated"] > poi["p30_retailer_only"]
    assert any("P30" in line for line in lines)
    common = set.intersection(*(set(load_sample(r)["user_id"])
                                for r in ("retailer", "media", "operator")))
    assert summary["psi"]["intersection"] == len(common)
    ids = [pd.read_parquet(tmp_path / f"{r}_aligned.parquet")["user_id"].tolist()
           for r in ("retailer", "media", "operator")]
    assert ids[0] == ids[1] == ids[2] and set(ids[0]) == common
    for r in ("retailer", "media", "operator"):  # person-level rows: their owner's only
        assert (tmp_path / f"{r}_aligned.parquet").stat().st_mode & 0o077 == 0
    crowd = summary["operator_crowd"]
    assert crowd["epsilon_left"] == pytest.approx(0.0)  # own crowd, funnel, joint crowd: 1 each
    check_joint_releases(tmp_path, summary)
    html = (tmp_path / "operator_crowd.html").read_text()
    assert "leaflet" in html.lower() and 'src="http' not in html
    png = (tmp_path / "operator_crowd.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    cells = pd.read_csv(tmp_path / "operator_crowd.csv")
    assert len(cells) == crowd["cells"] and (cells["count"] >= 0).all()
    assert json.loads((tmp_path / "summary.json").read_text())["psi"] == summary["psi"]
    assert any("DP crowd" in line for line in lines)


def check_joint_releases(out: Path, summary: dict) -> None:
    """The retailer's funnel and TA crowd are released, mapped and paid for by the others."""
    from fedlab_kit.analytics.funnel import STAGES
    from fedlab_kit.data import load_truth
    from fedlab_kit.dp import PrivacyLedger

    released = pd.read_csv(out / "retailer_funnel.csv")
    funnel = released[released["level"] == "campaign"]
    assert set(released["level"]) == {"campaign", "district"}
    truth = load_truth("funnel").melt(id_vars=["campaign", "district_id", "group"],
                                      value_vars=list(STAGES), var_name="stage",
                                      value_name="true")
    joined = funnel.merge(truth, on=["campaign", "district_id", "group", "stage"])
    assert len(joined) == len(funnel) == len(truth)
    inside = (joined["ci_low"] <= joined["true"]) & (joined["true"] <= joined["ci_high"])
    assert inside.mean() > 0.8
    crowd = pd.read_csv(out / "retailer_ta_crowd.csv")
    assert summary["joint"]["retailer"]["crowd_cells"] == len(crowd) > 100
    assert (crowd["count"] >= 0).all() and crowd["suppressed"].any()
    campaigns = sorted(funnel["campaign"].unique())
    for stem in (*(f"retailer_funnel_{c}" for c in campaigns), "retailer_ta_crowd"):
        assert (out / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
        assert 'src="http' not in (out / f"{stem}.html").read_text()
    for c in campaigns:  # each file is its campaign's map, and says so
        assert f"<title>Campaign funnel: {c} (DP)</title>" in (
            out / f"retailer_funnel_{c}.html").read_text()
    for role, spent in (("media", 1.0), ("operator", 3.0), ("retailer", 0.0)):
        ledger = PrivacyLedger(out / f"{role}_privacy_ledger.sqlite", total_epsilon=3.0,
                               party=role)
        assert ledger.remaining().epsilon == pytest.approx(3.0 - spent)
