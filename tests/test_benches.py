"""The benchmark commands run end to end at a small size and report what they promise."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedlab_kit.cli import main

pytestmark = pytest.mark.e2e


def test_bench_boost_small(tmp_path: Path) -> None:
    out = tmp_path / "boost.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = CliRunner().invoke(main, ["bench", "boost", "--rows", "3000", "--features", "8",
                                        "--trees", "3", "--depth", "3", "--parties", "3",
                                        "--json", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    for key in ("auc_federated", "auc_centralized", "auc_label_holder_only",
                "seconds_per_tree", "bytes_sent", "peak_rss_mb"):
        assert key in report
    assert abs(report["auc_federated"] - report["auc_centralized"]) < 0.02
    assert set(report["bytes_sent"]) == {"retailer", "media", "operator"}
    phases = report["seconds_per_tree_phases"]
    assert phases["encrypt"] > 0 and phases["histogram"] > 0


def test_bench_dp_small(tmp_path: Path) -> None:
    out = tmp_path / "dp.json"
    res = CliRunner().invoke(main, ["bench", "dp", "--persons", "4000", "--json", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["epsilon"] == 1.0 and report["funnel_counts_evaluated"] == 240
    # 300 released H3 cells, 9 of them with 30+ true TA persons at 4000 persons (seed 7)
    assert report["cells_evaluated"] >= 5 and report["p30"] is not None
    # small stage counts at 4000 persons: about 0.45-0.55 over runs (0.5455 once); a noise
    # scale twice as large would put it near 1
    assert report["funnel_median_rel_error"] < 0.8
    assert report["crowd_ci_coverage"] >= 0.85  # 95 % intervals over all 300 cells (~0.96)


@pytest.mark.parametrize("transport", ["tcp", "wss"])
def test_bench_relay_small(tmp_path: Path, transport: str) -> None:
    out = tmp_path / "relay.json"
    res = CliRunner().invoke(main, ["bench", "relay", "--mb", "8", "--message-mb", "2",
                                    "--transport", transport, "--json", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["transport"] == transport and report["relay"].startswith(f"{transport}://")
    assert report["relay_digest_ok"] and report["tcp_digest_ok"]  # every byte arrived intact
    assert report["relay_mb_per_s"] > 0 and report["ratio_vs_tcp"] > 0


def test_bench_soak_small(tmp_path: Path) -> None:
    """Rooms of three through a relay SIGKILLed every 1.5 s, with a busy flood from another
    address: every message arrives exactly once, in order and intact, and the relay's RSS
    stays within its memory cap plus its per-connection buffers."""
    out = tmp_path / "soak.json"
    res = CliRunner().invoke(main, ["bench", "soak", "--rooms", "4", "--mb", "120",
                                    "--kill-every", "1.5", "--flood", "16", "--memory-mb", "64",
                                    "--timeout", "120", "--json", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["failed_parties"] == 0, report["errors"]
    assert report["messages_received"] == report["messages_expected"] > 0
    assert report["lost"] == report["duplicated"] == report["corrupt"] == 0
    assert report["out_of_order"] == 0
    assert report["relay_kills"] >= 1, report  # the kills happened while messages flowed
    assert report["flood_sockets_opened"] > 16  # the flood was renewed as the relay dropped it
    assert 0 < report["relay_rss_max_mb"] < 64 + 12 * 40 + 150, report  # cap + 12 x buffers


def test_bench_lr_small(tmp_path: Path) -> None:
    out = tmp_path / "lr.json"
    res = CliRunner().invoke(main, ["bench", "lr", "--rows", "3000", "--features", "9",
                                    "--parties", "3", "--epochs", "6", "--json", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    for key in ("seconds_per_epoch", "auc_federated", "auc_centralized",
                "auc_label_holder_only", "bytes_sent"):
        assert key in report
    assert abs(report["auc_federated"] - report["auc_centralized"]) < 0.01
    assert report["auc_federated"] > report["auc_label_holder_only"]
    assert set(report["bytes_sent"]) == {"retailer", "media", "operator"}
    assert report["seconds_per_epoch"] > 0
