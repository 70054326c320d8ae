"""One way to stop, over a real relay with party processes: a party that refuses (and stays
in the room) stops every peer with its reason, and a party whose process is replaced stops
the others with an error that names it; then everyone can run the protocol again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import stop_workers
from party_processes import CTX, party_processes

pytestmark = pytest.mark.e2e
NAMES = {"psi": ("media", "operator", "retailer"), "boost": ("media", "operator", "retailer"),
         "counts": ("operator", "retailer"), "psi2": ("media", "retailer")}
REFUSER = {"psi": "retailer", "boost": "retailer", "counts": "operator", "psi2": "retailer"}
REASON = {"psi": "duplicate IDs", "boost": "missing or infinite labels", "counts": "refused",
          "psi2": "duplicate IDs"}
WHAT = {"psi": "PSI", "boost": "SecureBoost training", "counts": "the joint count",
        "psi2": "PSI"}


@pytest.mark.parametrize("job", ["psi", "psi2", "boost", "counts"])
def test_a_refusing_party_that_stays_stops_every_peer_with_its_reason(tmp_path: Path,
                                                                       job: str) -> None:
    hold = CTX.Event()
    refuser = REFUSER[job]
    with party_processes(tmp_path, NAMES[job], lambda n, key, inv, q: (
            stop_workers.stopping_party, (n, key, inv, job, refuser, str(tmp_path), hold, q))
            ) as (_, q, procs):
        items = {n: (kind, msg, t) for n, kind, msg, t in
                 (q.get(timeout=3 * stop_workers.PEER_TIMEOUT) for _ in procs)}
        assert all(p.is_alive() for p in procs)  # the refusing party is still in the room
        hold.set()
    kind, msg, refused_at = items.pop(refuser)
    assert kind not in ("ok", "PeerAborted", "TimeoutError") and REASON[job] in msg
    for name, (kind, msg, t) in items.items():
        assert kind == "PeerAborted", (name, kind, msg)  # told, not timed out
        assert msg.startswith(f"{refuser!r} stopped {WHAT[job]}: ") and REASON[job] in msg
        # told at once: well before the peers' own timeout could have ended their wait
        assert t - refused_at < stop_workers.PEER_TIMEOUT / 4
        print(f"{job}: {name} stopped {t - refused_at:.2f} s after {refuser} refused")


def test_a_replaced_process_stops_its_peers_and_everyone_can_run_again(tmp_path: Path) -> None:
    """The operator's process is killed mid-PSI and a new one joins and runs PSI again (as
    after a kernel restart): the others stop with an error naming it, run PSI again, and all
    three get the intersection."""
    names = ("media", "operator", "retailer")
    n_ids = 20_000
    with party_processes(tmp_path, names, lambda n, key, inv, q: (
            stop_workers.psi_twice, (n, key, inv, n_ids, q))) as (_, q, procs):
        joined = {q.get(timeout=60)[0] for _ in names}
        assert joined == set(names)
        time.sleep(2.0)  # PSI is under way (20k IDs take ~10 s here)
        operator = procs[names.index("operator")]
        operator.kill()
        killed_at = time.time()
        operator.join(10)
        # the same key and invitation (create_room wrote them), in a new process
        inv_text = (tmp_path / "invitation.txt").read_text().strip()
        new = CTX.Process(target=stop_workers.psi_twice,
                          args=("operator", str(tmp_path / "operator.key"), inv_text, n_ids, q))
        new.start()
        procs.append(new)
        events: dict[str, list[tuple[str, str, float]]] = {n: [] for n in names}
        while not all(any(k == "ok" for k, _, _ in events[n]) for n in names):
            name, kind, msg, t = q.get(timeout=4 * stop_workers.PEER_TIMEOUT)
            events[name].append((kind, msg, t))
    for name in ("media", "retailer"):
        first_kind, first_msg, t = events[name][0]
        assert first_kind in ("PeerLost", "PeerRestarted", "PeerAborted"), events[name]
        assert "'operator'" in first_msg and "run PSI again at every party" in first_msg
        assert t - killed_at < stop_workers.PEER_TIMEOUT / 4  # not the protocol timeout
        print(f"{name} stopped {t - killed_at:.2f} s after the kill: {first_msg}")
    sizes = {n: [m for k, m, _ in events[n] if k == "ok"] for n in names}
    assert sizes == {n: [str(n_ids)] for n in names}
    assert [k for k, _, _ in events["operator"]] == ["joined", "ok"]
