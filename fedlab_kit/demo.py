"""``fedlab demo``: the main job on the embedded default.

A relay and three party processes (retailer, media, operator) on localhost, each reading its
own file of the shipped sample city. Stages so far: the roll call (each party tells the
others what it brings: row counts and column names, never rows), a three-party PSI that
aligns the common customers, and the operator's DP release of its own crowd per H3 cell,
drawn on an offline map. Later stages (training, joint DP releases) append to it.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__
from .dp import PrivacyLedger
from .errors import FedlabError
from .identity import Identity, Invitation
from .local import PartyProcesses, RelayProcess, create_room
from .protocol import RollCall, run
from .session import Party

ROLES = ("retailer", "media", "operator")


def party_job(role: str, key: str, invitation: str, data: str | None, out: str,
               results: Any) -> None:
    """What one party process does (runs in its own OS process)."""
    from .data import load_sample

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
        (Path(out) / f"{role}_rollcall.json").write_text(json.dumps(roll, indent=2) + "\n")
        aligned.align(frame).to_parquet(Path(out) / f"{role}_aligned.parquet", index=False)
        report = {"ok": True, "rollcall_s": round(rollcall_s, 3),
                  "psi_s": round(aligned.seconds, 2), "intersection": aligned.size,
                  "psi_report": aligned.report.summary()}
        if role == "operator":
            report["crowd"] = _operator_crowd_map(Path(out), data)
        results.put((role, report))
    except Exception as exc:  # reported to the parent, which prints it readably
        results.put((role, {"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
        raise


def _operator_crowd_map(out: Path, data: str | None) -> dict[str, Any]:
    """The operator releases its own crowd per H3 cell with DP and maps it (own data only)."""
    from . import maps
    from .analytics import release_own_crowd
    from .data import load_districts, load_pois, load_sample_visits

    pois = load_pois(root=data)
    visits = load_sample_visits(root=data).merge(pois[["poi_id", "h3_r8"]], on="poi_id")
    ledger_path = out / "operator_privacy_ledger.sqlite"
    ledger_path.unlink(missing_ok=True)  # the demo starts from a fresh budget each run
    ledger = PrivacyLedger(ledger_path, total_epsilon=2.0, party="operator")
    cells, bounding = release_own_crowd(visits.rename(columns={"h3_r8": "h3"}), ledger,
                                        keys=sorted(pois["h3_r8"].unique()), epsilon=1.0)
    cells.to_csv(out / "operator_crowd.csv", index=False)
    m = maps.base_map()
    maps.districts_outline(m, load_districts(root=data))
    maps.crowd_layer(m, cells)
    files = {}
    for name in ("operator_crowd.html", "operator_crowd.png"):
        try:
            files[name] = str(maps.snapshot(m, out / name))
        except FedlabError as exc:  # no browser, or map assets not fetched: say so, go on
            files[name] = f"skipped: {exc}"
    return {"cells": len(cells), "epsilon": 1.0, "epsilon_left": ledger.remaining().epsilon,
            "persons_truncated": bounding["persons_truncated"], "files": files}


def run_demo(out: Path, data: Path | None = None,
             echo: Callable[[str], None] = print) -> dict[str, Any]:
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
            r: (r, str(keys[r]), inv.to_string(), str(data) if data else None, str(out), results)
            for r in ROLES})
        try:
            reports = dict(results.get(timeout=300) for _ in ROLES)
        except Exception as exc:
            raise FedlabError("demo parties did not report within 300 s") from exc
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
        "stages": ["rollcall", "psi", "dp-crowd-own"],
        "operator_crowd": reports["operator"]["crowd"],
        "psi": {"intersection": sizes.pop(), "protocol": "ECDH-PSI over Curve25519, 3 parties",
                "aligned_files": [f"{r}_aligned.parquet" for r in ROLES]},
        "timings": {"total_s": round(time.monotonic() - started, 2),
                    **{f"{r}_rollcall_s": rep["rollcall_s"] for r, rep in reports.items()},
                    **{f"{r}_psi_s": rep["psi_s"] for r, rep in reports.items()}},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for r in ROLES:
        echo(f"{r}: {summary['parties'][r]['rows']} rows, "
             f"{summary['parties'][r]['columns']} columns (shared: counts and names only)")
    echo(f"PSI: {summary['psi']['intersection']} customers common to all three; aligned rows "
         f"in {out}/<party>_aligned.parquet")
    crowd = summary["operator_crowd"]
    echo(f"DP crowd (operator's own visits, epsilon {crowd['epsilon']}): "
         f"{crowd['cells']} H3 cells -> {', '.join(crowd['files'].values())}")
    return summary
