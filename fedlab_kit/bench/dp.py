"""``fedlab bench dp``: accuracy of the joint DP releases against the generator's truth.

Generates a city, runs the demo pipeline on it (relay + three party processes: PSI, the
BFV ad funnel, the retailer x operator PSI and the BFV TA crowd, each at epsilon 1) and
compares the retailer's released numbers with the ground truth the generator wrote.
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
    """P30 (share of cells within 30 % of the truth) over cells with truth >= ``min_true``."""
    true = truth[(truth["level"] == level) & (truth["ta_label"] == label)]
    joined = released.merge(true[["cell_id", "persons"]], left_on="h3", right_on="cell_id")
    big = joined[joined["persons"] >= min_true]
    rel = (big["count"] - big["persons"]).abs() / big["persons"]
    return {"p30": round(float((rel <= 0.3).mean()), 4) if len(big) else None,
            "cells_evaluated": len(big),
            "crowd_median_rel_error": round(float(rel.median()), 4),
            "crowd_ci_coverage": round(float(((joined["ci_low"] <= joined["persons"])
                                              & (joined["persons"] <= joined["ci_high"])).mean()),
                                       4)}


def funnel_accuracy(released: pd.DataFrame, truth: pd.DataFrame) -> dict[str, Any]:
    """Relative errors of stage counts per (campaign, district, group, stage) and per
    (district, stage) summed over campaigns and groups."""
    key = ["campaign", "district_id", "group"]
    long = truth.melt(id_vars=key, value_vars=list(STAGES), var_name="stage", value_name="true")
    m = released.merge(long, on=[*key, "stage"])
    rel = (m["count"] - m["true"]).abs() / m["true"]
    per_district = m.groupby(["district_id", "stage"])[["count", "true"]].sum()
    drel = (per_district["count"] - per_district["true"]).abs() / per_district["true"]
    return {"funnel_max_rel_error": round(float(rel.max()), 4),
            "funnel_median_rel_error": round(float(rel.median()), 4),
            "funnel_share_within_5pct": round(float((rel <= 0.05).mean()), 4),
            "funnel_counts_evaluated": len(m),
            "funnel_district_max_rel_error": round(float(drel.max()), 4)}


def bench_dp(persons: int = 100_000, seed: int = 7, funnel_epsilon: float = 1.0
             ) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        city = Path(tmp) / "city"
        make_and_write(persons, seed, city)
        started = time.monotonic()
        summary = run_demo(Path(tmp) / "out", data=city, echo=lambda _: None, draw_maps=False,
                           funnel_epsilon=funnel_epsilon)
        seconds = time.monotonic() - started
        crowd = pd.read_csv(Path(tmp) / "out" / "retailer_ta_crowd.csv")
        funnel = pd.read_csv(Path(tmp) / "out" / "retailer_funnel.csv")
        report: dict[str, Any] = {
            "persons": persons, "seed": seed, "epsilon": 1.0, "funnel_epsilon": funnel_epsilon,
            "max_cells": 5,
            "crowd_level": "h3_r8", "crowd_label": "beauty",
            **crowd_accuracy(crowd, load_truth("crowd", root=city)),
            **funnel_accuracy(funnel, load_truth("funnel", root=city)),
            "intersection_3way": summary["psi"]["intersection"],
            "intersection_retailer_operator":
                summary["joint"]["retailer"]["crowd_intersection"],
            "seconds_total": round(seconds, 2),
            "seconds_joint": {r: summary["timings"][f"{r}_joint_s"]
                              for r in ("retailer", "media", "operator")},
        }
    report["suppressed_cells"] = int(np.sum(crowd["suppressed"]))
    return report
