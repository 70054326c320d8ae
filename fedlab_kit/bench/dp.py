"""``fedlab bench dp``: accuracy of the joint DP releases against the generator's truth.

For each seed: generates a city, runs the demo pipeline on it (relay + three party
processes: PSI, the BFV ad funnel, the retailer x operator PSI and the BFV TA crowd, each
at epsilon 1) and compares the retailer's released numbers with the generator's truth.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..analytics.funnel import STAGES
from ..data import load_truth
from ..data.city import make_and_write
from ..demo import run_demo


def crowd_accuracy(released: pd.DataFrame, truth: pd.DataFrame, *, label: str = "beauty",
                   level: str = "h3_r8", min_true: int = 30) -> dict[str, Any]:
    """P30 (share of cells within 30 % of the truth) over cells with truth >= ``min_true``,
    and how often the intervals hold the (unbounded) true crowd."""
    true = truth[(truth["level"] == level) & (truth["ta_label"] == label)]
    joined = released.merge(true[["cell_id", "persons"]], left_on="h3", right_on="cell_id")
    big = joined[joined["persons"] >= min_true]
    rel = (big["count"] - big["persons"]).abs() / big["persons"]
    inside = (joined["ci_low"] <= joined["persons"]) & (joined["persons"] <= joined["ci_high"])
    return {"p30": round(float((rel <= 0.3).mean()), 4) if len(big) else None,
            "cells_evaluated": len(big),
            "crowd_median_rel_error": round(float(rel.median()), 4),
            "crowd_ci_coverage": round(float(inside.mean()), 4),
            "crowd_cells": len(joined), "crowd_ci_misses": int((~inside).sum()),
            "crowd_median_ci_width": float((joined["ci_high"] - joined["ci_low"]).median())}


def funnel_accuracy(released: pd.DataFrame, truth: pd.DataFrame) -> dict[str, Any]:
    """Relative errors of stage counts per (campaign, district, group, stage) and per
    (district, stage) over campaigns and groups (the released district totals when there
    are any), and how often the intervals of both hold the truth."""
    key = ["campaign", "district_id", "group"]
    long = truth.melt(id_vars=key, value_vars=list(STAGES), var_name="stage", value_name="true")
    level = released["level"] if "level" in released else pd.Series("campaign", released.index)
    cells = released[level == "campaign"]
    m = cells.merge(long, on=[*key, "stage"])
    rel = (m["count"] - m["true"]).abs() / m["true"]
    true_d = long.groupby(["district_id", "stage"])["true"].sum()
    totals = released[level == "district"]
    if len(totals):
        per_district = totals.set_index(["district_id", "stage"])[["count", "ci_low", "ci_high"]]
    else:
        per_district = cells.groupby(["district_id", "stage"])[["count"]].sum()
    per_district = per_district.join(true_d, how="inner")
    drel = (per_district["count"] - per_district["true"]).abs() / per_district["true"]
    inside = list((m["ci_low"] <= m["true"]) & (m["true"] <= m["ci_high"]))
    if len(totals):
        inside += list((per_district["ci_low"] <= per_district["true"])
                       & (per_district["true"] <= per_district["ci_high"]))
    return {"funnel_max_rel_error": round(float(rel.max()), 4),
            "funnel_median_rel_error": round(float(rel.median()), 4),
            "funnel_share_within_5pct": round(float((rel <= 0.05).mean()), 4),
            "funnel_counts_evaluated": len(m),
            "funnel_district_max_rel_error": round(float(drel.max()), 4),
            "funnel_ci_coverage": round(float(np.mean(inside)), 4),
            "funnel_intervals": len(inside), "funnel_ci_misses": int(len(inside) - sum(inside))}


def _epsilon_spent(out: Path) -> dict[str, float]:
    from ..dp import PrivacyLedger

    return {role: round(PrivacyLedger.open(out / f"{role}_privacy_ledger.sqlite").spent().epsilon,
                        6)
            for role in ("retailer", "media", "operator")}


def bench_dp_seed(persons: int, seed: int, funnel_epsilon: float = 1.0,
                  district_share: float | None = None) -> dict[str, Any]:
    """One city, one run of the demo's joint releases, scored against the truth."""
    with tempfile.TemporaryDirectory() as tmp:
        city, out = Path(tmp) / "city", Path(tmp) / "out"
        make_and_write(persons, seed, city)
        started = time.monotonic()
        summary = run_demo(out, data=city, echo=lambda _: None, draw_maps=False,
                           funnel_epsilon=funnel_epsilon, district_share=district_share)
        seconds = time.monotonic() - started
        crowd = pd.read_csv(out / "retailer_ta_crowd.csv")
        funnel = pd.read_csv(out / "retailer_funnel.csv")
        report: dict[str, Any] = {
            "seed": seed,
            **crowd_accuracy(crowd, load_truth("crowd", root=city)),
            **funnel_accuracy(funnel, load_truth("funnel", root=city)),
            "epsilon_spent": _epsilon_spent(out),
            "intersection_3way": summary["psi"]["intersection"],
            "intersection_retailer_operator":
                summary["joint"]["retailer"]["crowd_intersection"],
            "bounding_loss": summary["joint"]["operator"]["crowd"].get("bounding_loss"),
            "seconds_total": round(seconds, 2),
            "seconds_joint": {r: summary["timings"][f"{r}_joint_s"]
                              for r in ("retailer", "media", "operator")},
            "suppressed_cells": int(np.sum(crowd["suppressed"])),
        }
    return report


def bench_dp(persons: int = 100_000, seed: int = 7, funnel_epsilon: float = 1.0,
             seeds: int = 1, district_share: float | None = None) -> dict[str, Any]:
    """``seeds`` cities (seeds ``seed, seed + 1, ...``): per-seed figures and pooled ones."""
    runs = [bench_dp_seed(persons, seed + i, funnel_epsilon, district_share)
            for i in range(max(1, seeds))]
    crowd_cells = sum(r["crowd_cells"] for r in runs)
    intervals = sum(r["funnel_intervals"] for r in runs)
    pooled = {
        "persons": persons, "seeds": [r["seed"] for r in runs], "epsilon": 1.0,
        "funnel_epsilon": funnel_epsilon, "district_share": district_share, "max_cells": 5,
        "crowd_level": "h3_r8", "crowd_label": "beauty",
        "p30": round(float(np.mean([r["p30"] for r in runs])), 4),
        "p30_min": min(r["p30"] for r in runs),
        "crowd_ci_coverage": round(1 - sum(r["crowd_ci_misses"] for r in runs) / crowd_cells, 4),
        "crowd_ci_coverage_min": min(r["crowd_ci_coverage"] for r in runs),
        "funnel_district_max_rel_error": max(r["funnel_district_max_rel_error"] for r in runs),
        "funnel_ci_coverage": round(1 - sum(r["funnel_ci_misses"] for r in runs) / intervals, 4),
        "funnel_ci_coverage_min": min(r["funnel_ci_coverage"] for r in runs),
        "funnel_share_within_5pct": round(float(np.mean([r["funnel_share_within_5pct"]
                                                         for r in runs])), 4),
        "epsilon_spent": runs[0]["epsilon_spent"],
        "seconds_total": round(sum(r["seconds_total"] for r in runs), 2),
    }
    return {**pooled, "per_seed": runs} if len(runs) > 1 else {**pooled, **runs[0]}
