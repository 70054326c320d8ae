"""``fedlab demo``: the main job on the embedded default.

A relay and three party processes (retailer, media, operator) on localhost, each reading its
own file of the shipped sample city. Stages so far: the roll call (each party tells the
others what it brings: row counts and column names, never rows), a three-party PSI that
aligns the common customers, the joint DP ad funnel (BFV across all three), a retailer x
operator PSI and the joint DP target-audience crowd per H3 cell, and the operator's DP
release of its own crowd, all drawn on offline maps. Training appends to it later.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import __version__
from ..dp import PrivacyLedger
from ..errors import FedlabError
from ..net.driver import run
from ..net.identity import Identity, Invitation
from ..net.session import Party
from ..protocol import RollCall
from ..tables import write_table
from .harness import PartyProcesses, RelayProcess, create_room
from .training import logistic_stage, poi_crowd_stage, top_coefficients, training_stage

ROLES = ("retailer", "media", "operator")


def party_job(role: str, key: str, invitation: str, data: str | None, out: str,
              results: Any, draw_maps: bool = True, funnel_epsilon: float = 1.0,
              district_share: float | None = None) -> None:
    """What one party process does (runs in its own OS process)."""
    from ..data import load_campaigns, load_footfall, load_pois, load_sample, load_sample_visits

    try:
        frame = load_sample(role, root=data)
        info = {"party": role, "kit": __version__, "rows": len(frame),
                "columns": [str(c) for c in frame.columns]}
        started = time.monotonic()
        with Party(Identity.load(key), Invitation.from_string(invitation)) as party:
            roll = run(party, RollCall(role, party.peers, info), session="demo-rollcall",
                       timeout=120)
            rollcall_s = time.monotonic() - started
            aligned = party.psi(frame["user_id"], session="demo-psi")
            rows = aligned.align(frame)
            ledger = _fresh_ledger(Path(out), role, 2.0 + max(1.0, funnel_epsilon))
            started = time.monotonic()
            joint = joint_stages(party, role, rows, frame, ledger, Path(out), data, draw_maps,
                                 funnel_epsilon, district_share)
            joint["joint_s"] = round(time.monotonic() - started, 2)
            started = time.monotonic()
            training = training_stage(party, role, rows)
            training["training_s"] = round(time.monotonic() - started, 2)
            started = time.monotonic()
            logistic = logistic_stage(party, role, rows)
            logistic["logistic_s"] = round(time.monotonic() - started, 2)
            started = time.monotonic()
            poi = poi_crowd_stage(
                party, role, frame, pois=load_pois(data), campaigns=load_campaigns(data),
                footfall=load_footfall(data) if role == "retailer" else None,
                visits=load_sample_visits(data) if role == "operator" else None)
            poi["poi_crowd_s"] = round(time.monotonic() - started, 2)
        (Path(out) / f"{role}_rollcall.json").write_text(json.dumps(roll, indent=2) + "\n")
        write_table(rows, Path(out) / f"{role}_aligned.parquet", private=True)
        report = {"ok": True, "rollcall_s": round(rollcall_s, 3),
                  "psi_s": round(aligned.seconds, 2), "intersection": aligned.size,
                  "psi_report": aligned.report.summary(), "joint": joint, "training": training,
                  "logistic": logistic, "poi_crowd": poi}
        if role == "operator" and draw_maps:
            report["crowd"] = _operator_crowd_map(Path(out), data, ledger)
        results.put((role, report))
    except Exception as exc:  # reported to the parent, which prints it readably
        results.put((role, {"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
        raise


def _fresh_ledger(out: Path, role: str, total: float = 3.0) -> PrivacyLedger:
    """Each demo run starts from a fresh budget (epsilon 3 per party by default)."""
    path = out / f"{role}_privacy_ledger.sqlite"
    path.unlink(missing_ok=True)
    return PrivacyLedger(path, total_epsilon=total, party=role)


def _maps(m: Any, out: Path, stem: str) -> dict[str, str]:
    from .. import maps

    files = {}
    for name in (f"{stem}.html", f"{stem}.png"):
        try:
            files[name] = str(maps.snapshot(m, out / name))
        except FedlabError as exc:  # no browser, or map assets not fetched: say so, go on
            files[name] = f"skipped: {exc}"
    return files


def joint_stages(party: Party, role: str, rows: Any, frame: Any, ledger: PrivacyLedger,
                 out: Path, data: str | None, draw_maps: bool,
                 funnel_epsilon: float = 1.0, district_share: float | None = None
                 ) -> dict[str, Any]:
    """Joint releases after the three-party PSI: the ad funnel (all three parties, over the
    aligned rows), then the TA crowd (retailer and operator, after their own two-party PSI).
    Every number released is DP; the retailer holds the BFV key and gets the results."""
    from concurrent.futures import ProcessPoolExecutor

    import numpy as np
    import pandas as pd

    from .. import maps
    from ..analytics import funnel, joint_crowd
    from ..data import load_basemap, load_campaigns, load_districts, load_pois, load_sample_visits
    from ..orphans import exit_with_parent

    campaigns_table = load_campaigns(root=data)
    campaigns = sorted(campaigns_table["campaign"].unique())
    report: dict[str, Any] = {}
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn"),
                             initializer=exit_with_parent) as pool:
        if role == "retailer":
            result = funnel.funnel_for_outcomes(party, rows["purchases"] > 0,
                                                rows["repeat_purchase"].astype(int),
                                                chain=["operator", "media"])
            result.to_csv(out / "retailer_funnel.csv", index=False)
            report["funnel_rows"] = len(result)
            if draw_maps:  # one file per campaign, named after it
                report["funnel_files"] = {}
                for campaign, m in maps.campaign_funnel_maps(
                        load_districts(root=data), result, stage_order=list(funnel.STAGES),
                        color_stage="purchased", basemap=load_basemap(root=data)).items():
                    report["funnel_files"].update(_maps(m, out, f"retailer_funnel_{campaign}"))
        elif role == "operator":
            visited = funnel.campaign_visitors(rows["user_id"], load_sample_visits(root=data),
                                               campaigns_table)
            report["funnel"] = funnel.funnel_for_visits(party, visited, ledger=ledger,
                                                        epsilon=funnel_epsilon,
                                                        key_holder="retailer",
                                                        next_party="media", executor=pool)
        else:
            report["funnel"] = funnel.funnel_for_exposure(
                party, rows["exposure_district_id"],
                pd.DataFrame({c: rows[f"exposed_{c}"].to_numpy() for c in campaigns}),
                ledger=ledger, epsilon=funnel_epsilon, key_holder="retailer",
                **({} if district_share is None else {"district_share": district_share}),
                districts=sorted(load_districts(root=data)["district_id"]), executor=pool)
        if role == "media":
            return report
        pair = party.psi(frame["user_id"], peers=["operator" if role == "retailer" else
                                                  "retailer"], session="demo-psi-crowd")
        both = pair.align(frame)
        report["crowd_intersection"] = pair.size
        if role == "retailer":
            cells = joint_crowd.crowd_for_labels(party, both["ta_beauty"],
                                                 visit_holder="operator")
            cells.to_csv(out / "retailer_ta_crowd.csv", index=False)
            report["crowd_cells"] = len(cells)
            if draw_maps:
                m = maps.base_map(basemap=load_basemap(root=data))
                districts = load_districts(root=data)
                maps.districts_outline(m, districts)
                maps.crowd_layer(m, cells, name="Beauty TA crowd (DP)", districts=districts)
                report["crowd_files"] = _maps(m, out, "retailer_ta_crowd")
        else:
            pois = load_pois(root=data)
            visits, _ = joint_crowd.visit_cells(load_sample_visits(root=data), pois=pois)
            report["crowd"] = joint_crowd.crowd_for_visits(
                party, both["user_id"], visits, ledger=ledger, epsilon=1.0,
                keys=sorted(np.unique(pois["h3_r8"])), label_holder="retailer", executor=pool)
    return report


def _operator_crowd_map(out: Path, data: str | None, ledger: PrivacyLedger) -> dict[str, Any]:
    """The operator releases its own crowd per H3 cell with DP and maps it (own data only)."""
    from .. import maps
    from ..analytics import release_own_crowd
    from ..data import load_basemap, load_districts, load_pois, load_sample_visits

    pois = load_pois(root=data)
    visits = load_sample_visits(root=data).merge(pois[["poi_id", "h3_r8"]], on="poi_id")
    cells, bounding = release_own_crowd(visits.rename(columns={"h3_r8": "h3"}), ledger,
                                        keys=sorted(pois["h3_r8"].unique()), epsilon=1.0)
    cells.to_csv(out / "operator_crowd.csv", index=False)
    m = maps.base_map(basemap=load_basemap(root=data))
    districts = load_districts(root=data)
    maps.districts_outline(m, districts)
    maps.crowd_layer(m, cells, name="Operator's crowd per H3 cell (DP)", districts=districts)
    files = _maps(m, out, "operator_crowd")
    return {"cells": len(cells), "epsilon": 1.0, "epsilon_left": ledger.remaining().epsilon,
            "persons_truncated": bounding["persons_truncated"], "files": files}


def run_demo(out: Path, data: Path | None = None, echo: Callable[[str], None] = print, *,
             draw_maps: bool = True, timeout: float = 900,
             funnel_epsilon: float = 1.0, district_share: float | None = None
             ) -> dict[str, Any]:
    """Run the demo; writes ``out/summary.json`` and per-party outputs, returns the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    with tempfile.TemporaryDirectory() as keys_dir, \
            RelayProcess.start(log_path=out / "relay.log") as relay:
        echo(f"relay on {relay.host}:{relay.port}; starting {', '.join(ROLES)}")
        inv, keys = create_room(ROLES, keys_dir, relay.host, relay.port, room="demo")
        procs = PartyProcesses.start(party_job, {
            r: (r, str(keys[r]), inv.to_string(), str(data) if data else None, str(out), results,
                draw_maps, funnel_epsilon, district_share)
            for r in ROLES})
        try:
            reports = dict(results.get(timeout=timeout) for _ in ROLES)
        except Exception as exc:
            raise FedlabError(f"demo parties did not report within {timeout} s") from exc
        finally:
            codes = procs.join(60)
            procs.terminate()
    failed = {r: rep["error"] for r, rep in reports.items() if not rep["ok"]}
    if failed or any(codes.values()):
        raise FedlabError(f"demo failed: {failed or codes}")
    roll = json.loads((out / "retailer_rollcall.json").read_text())
    sizes = {rep["intersection"] for rep in reports.values()}
    if len(sizes) != 1:
        raise FedlabError(f"parties disagree on the intersection size: {sizes}")
    summary = {
        "kit": __version__,
        "parties": {r: {"rows": roll[r]["rows"], "columns": len(roll[r]["columns"]),
                        "psi": reports[r]["psi_report"]} for r in ROLES},
        "stages": ["rollcall", "psi", "dp-funnel-joint", "psi-retailer-operator",
                   "dp-ta-crowd-joint", "secureboost", "logistic-regression",
                   "poi-crowd-regression", *(["dp-crowd-own"] if draw_maps else [])],
        "training": reports["retailer"]["training"],
        "logistic": {**reports["retailer"]["logistic"], "weights": {
            **reports["retailer"]["logistic"]["weights"],
            **{f"{r}:{k}": v for r in ROLES[1:]
               for k, v in reports[r]["logistic"]["weights"].items()}}},
        "poi_crowd": reports["retailer"]["poi_crowd"],
        "operator_crowd": reports["operator"].get("crowd"),
        "joint": {r: rep["joint"] for r, rep in reports.items()},
        "psi": {"intersection": sizes.pop(), "protocol": "ECDH-PSI over Curve25519, 3 parties",
                "aligned_files": [f"{r}_aligned.parquet" for r in ROLES]},
        "timings": {"total_s": round(time.monotonic() - started, 2),
                    **{f"{r}_rollcall_s": rep["rollcall_s"] for r, rep in reports.items()},
                    **{f"{r}_psi_s": rep["psi_s"] for r, rep in reports.items()},
                    **{f"{r}_joint_s": rep["joint"]["joint_s"] for r, rep in reports.items()},
                    "training_s": reports["retailer"]["training"]["training_s"],
                    "logistic_s": reports["retailer"]["logistic"]["logistic_s"],
                    "poi_crowd_s": reports["retailer"]["poi_crowd"]["poi_crowd_s"]},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for r in ROLES:
        echo(f"{r}: {summary['parties'][r]['rows']} rows, "
             f"{summary['parties'][r]['columns']} columns (shared: counts and names only)")
    echo(f"PSI: {summary['psi']['intersection']} customers common to all three; aligned rows "
         f"in {out}/<party>_aligned.parquet")
    joint = summary["joint"]["retailer"]
    echo(f"DP ad funnel (BFV across all three, epsilon 1 paid by media and operator): "
         f"{joint['funnel_rows']} numbers -> {out}/retailer_funnel.csv "
         f"{' '.join(joint.get('funnel_files', {}).values())}")
    echo(f"DP beauty-TA crowd (BFV, retailer labels x operator visits, epsilon 1): "
         f"{joint['crowd_cells']} H3 cells -> {out}/retailer_ta_crowd.csv "
         f"{' '.join(joint.get('crowd_files', {}).values())}")
    tr = summary["training"]
    echo(f"SecureBoost (BFV, {tr['train_rows']} rows, 3 parties): test AUC "
         f"{tr['auc_federated']} vs {tr['auc_retailer_only']} on the retailer's columns alone")
    lr = summary["logistic"]
    top = ", ".join(f"{k} {v:+.2f}" for k, v in top_coefficients(lr["weights"], 3))
    echo(f"Logistic regression (BFV, 3 parties, {lr['iterations']} iterations): test AUC "
         f"{lr['auc_federated']} vs {lr['auc_retailer_only']} on the retailer's columns "
         f"alone; largest weights (per standard deviation) {top}")
    poi = summary["poi_crowd"]
    echo(f"POI crowd regression (BFV, {poi['train_pois']} counted POIs, 3 parties): P30 "
         f"{poi['p30_federated']} vs {poi['p30_retailer_only']} on the retailer's columns "
         f"alone ({poi['test_pois']} held-out POIs)")
    crowd = summary["operator_crowd"]
    if crowd:
        echo(f"DP crowd (operator's own visits, epsilon {crowd['epsilon']}): "
             f"{crowd['cells']} H3 cells -> {', '.join(crowd['files'].values())}")
    return summary
