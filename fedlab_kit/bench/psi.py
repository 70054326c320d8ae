"""``fedlab bench psi``: two party processes over a real relay, optionally next to OpenMined PSI.

Sets: ``n`` IDs each, of which ``overlap * n`` are common. Reports wall and CPU seconds (each
party process plus its worker pool), peak RSS per party, bytes sent, and with ``--vs
openmined`` the same sets through OpenMined PSI (P-256, one thread) in this process, with a
check that both intersections are equal.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from ..demo.harness import RelayProcess, create_room
from ..net.identity import Identity, Invitation
from ..net.session import Party


def bench_set(name: str, n: int, overlap: float, seed: int = 7) -> list[str]:
    """One of two sets ("alice", "bob") of ``n`` string IDs sharing ``round(overlap * n)``:
    alice's common IDs come first, bob's last."""
    return bench_ids(name, n, overlap, 0, n, seed)


def bench_ids(name: str, n: int, overlap: float, lo: int, hi: int, seed: int = 7
              ) -> list[str]:
    """Positions ``lo..hi`` of :func:`bench_set` without building the whole set."""
    common = round(overlap * n)
    blocks = [("c", common), (name[0], n - common)]  # (prefix, size), in set order
    out: list[str] = []
    start = 0
    for prefix, size in blocks if name == "alice" else blocks[::-1]:
        out += [f"{prefix}{seed}-{i - start}"
                for i in range(max(lo, start), min(hi, start + size))]
        start += size
    return out


def write_partitions(folder: Path, name: str, n: int, overlap: float, parts: int) -> None:
    """``name``'s bench set as ``parts`` Parquet files (column ``id``), one at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    bounds = [round(k * n / parts) for k in range(parts + 1)]
    for k in range(parts):
        ids = bench_ids(name, n, overlap, bounds[k], bounds[k + 1])
        pq.write_table(pa.table({"id": ids}), folder / f"part-{k:04d}.parquet")


def _shared_digest(name: str, rows: Any, n: int, overlap: float) -> str:
    """A digest of the common IDs' indices in the bench sets (equal at both parties, and
    in every run, when the intersections agree)."""
    import numpy as np

    common = round(overlap * n)
    index = np.sort(np.asarray(rows, np.int64) - (0 if name == "alice" else n - common))
    return hashlib.sha256(index.tobytes()).hexdigest()  # of the set, as _digest is


def _digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def _party(name: str, key: str, invitation: str, n: int, overlap: float, out: Any,
           cluster: str | None = None, protocol: str = "ecdh", source: str | None = None
           ) -> None:
    from ..psi import PartitionedIds

    ids: Any = PartitionedIds(source, "id") if source else bench_set(name, n, overlap)
    party = Party(Identity.load(key), Invitation.from_string(invitation), cluster=cluster)
    import fedlab_kit.psi.api  # noqa: F401  # imported before the clock starts, as in a notebook

    party.send(party.peers[0], b"", kind="ready")
    party.recv(kind="ready", timeout=120)
    t0 = time.monotonic()
    res = party.psi(ids, timeout=1800, protocol=protocol)
    seconds = time.monotonic() - t0
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    out.put((name, {
        "seconds": seconds,
        "cpu_seconds": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
        "peak_rss_mb": round(me.ru_maxrss / 1024, 1),
        "worker_peak_rss_mb": round(kids.ru_maxrss / 1024, 1),
        "bytes_sent": party.aio.bytes_sent,
        "intersection": res.size,
        "digest": "" if res.rows is None else _shared_digest(name, res.rows, n, overlap)
        if source else _digest([ids[i] for i in res.rows]),
    }))
    party.close()


def _openmined(n: int, overlap: float) -> tuple[float, str, int]:
    import private_set_intersection.python as om

    client = om.client.CreateWithNewKey(True)
    server = om.server.CreateWithNewKey(True)
    server_items, client_items = bench_set("bob", n, overlap), bench_set("alice", n, overlap)
    t0 = time.monotonic()
    setup = server.CreateSetupMessage(1e-9, len(client_items), server_items,
                                      om.DataStructure.RAW)
    response = server.ProcessRequest(client.CreateRequest(client_items))
    found = client.GetIntersection(setup, response)
    seconds = time.monotonic() - t0
    return seconds, _digest([client_items[i] for i in found]), len(found)


def _run(n: int, overlap: float, cluster: str | None, protocol: str = "ecdh",
         partitions: int = 0) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp, RelayProcess.start() as relay:
        inv, keys = create_room(["alice", "bob"], Path(tmp), relay.host, relay.port)
        sources = {p: "" for p in ("alice", "bob")}
        for p in sources if partitions else ():
            write_partitions(Path(tmp) / f"ids-{p}", p, n, overlap, partitions)
            sources[p] = str(Path(tmp) / f"ids-{p}")
        q = ctx.Queue()
        procs = [ctx.Process(target=_party, args=(p, str(keys[p]), inv.to_string(), n, overlap,
                                                  q, cluster, protocol, sources[p]))
                 for p in ("alice", "bob")]
        for p in procs:
            p.start()
        res = dict(q.get(timeout=3600) for _ in procs)
        for p in procs:
            p.join(60)
    return res


def bench_psi(n: int, overlap: float = 0.5, vs_openmined: bool = False,
              cluster: str | None = None, protocol: str = "auto", vs_ecdh: bool = False,
              input_partitions: int = 0) -> dict[str, Any]:
    """With ``cluster`` (e.g. "local:2", each party its own cluster), the same PSI runs
    first on the process pools, then on the clusters; the report is the cluster run's, with
    the pools' seconds and their ratio. With ``vs_ecdh`` the same sets also go through
    ECDH-PSI, after the ``protocol`` run. With ``input_partitions``, each party reads its
    set from that many Parquet files (:class:`~fedlab_kit.psi.PartitionedIds`) instead of
    holding it as a list."""
    if n <= 0 or not 0 <= overlap <= 1:
        raise ValueError("need n > 0 and 0 <= overlap <= 1")
    from ..psi.api import choose_protocol

    protocol = choose_protocol(protocol, 2, "intersection")
    parts = input_partitions
    pools = _run(n, overlap, None, protocol, parts) if cluster else None
    res = _run(n, overlap, cluster, protocol, parts)
    a, b = res["alice"], res["bob"]
    report: dict[str, Any] = {
        "n": n, "overlap": overlap, "intersection": a["intersection"],
        "expected_intersection": round(overlap * n),
        "parties_agree": a["digest"] == b["digest"],
        "seconds": round(max(a["seconds"], b["seconds"]), 2),
        "cpu_seconds": round(a["cpu_seconds"] + b["cpu_seconds"], 1),
        "peak_rss_mb": {"alice": a["peak_rss_mb"], "bob": b["peak_rss_mb"]},
        "worker_peak_rss_mb": {"alice": a["worker_peak_rss_mb"], "bob": b["worker_peak_rss_mb"]},
        "bytes_sent": {"alice": a["bytes_sent"], "bob": b["bytes_sent"]},
        "protocol": protocol,
        "input_partitions": parts,
    }
    if protocol == "ecdh":
        report["x25519_ops"] = 4 * n
    report["executor"] = cluster or "processpool"
    if pools is not None:
        pool_seconds = max(pools["alice"]["seconds"], pools["bob"]["seconds"])
        report |= {"processpool_seconds": round(pool_seconds, 2),
                   "ratio_vs_processpool": round(pool_seconds / report["seconds"], 3),
                   "same_intersection_as_processpool":
                       pools["alice"]["digest"] == a["digest"]}
    if vs_ecdh:
        ecdh = _run(n, overlap, cluster, "ecdh", parts)
        ecdh_seconds = max(ecdh["alice"]["seconds"], ecdh["bob"]["seconds"])
        report |= {"ecdh_seconds": round(ecdh_seconds, 2),
                   "ratio_vs_ecdh": round(ecdh_seconds / report["seconds"], 2),
                   "intersections_equal": ecdh["alice"]["digest"] == a["digest"]
                   and ecdh["bob"]["digest"] == b["digest"]}
    if vs_openmined:
        seconds, digest, size = _openmined(n, overlap)
        report |= {"openmined_seconds": round(seconds, 2), "openmined_intersection": size,
                   "intersections_equal": digest == a["digest"],
                   "ratio_vs_openmined": round(seconds / report["seconds"], 2)}
    return report
