"""``fedlab bench soak``: many rooms through one relay that is SIGKILLed and restarted.

``rooms`` rooms of three parties each exchange ``mb`` megabytes in all (every party sends
the same number of messages to each peer), while the relay process is killed with SIGKILL
and started again on the same port every ``kill_every`` seconds, and idle sockets from
another source address keep its handshake slots full (a ``busy`` flood). Each message
carries its index and a SHA-256 of its body: receivers count what was lost, duplicated,
out of order or corrupted (``lost``: expected and never received). A party whose peers
left before its last acknowledgements came back is counted in ``unconfirmed_flushes``
(its messages did arrive: the receivers counted them). The relay's RSS is sampled
throughout (each incarnation's).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import socket
import struct
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from ..demo.harness import RelayProcess, create_room
from .relay import _free_port

PARTIES = ("retailer", "media", "operator")
_HEAD = struct.Struct(">I")
FLOOD_SOURCE = "127.0.0.2"


def _message(index: int, filler: bytes) -> bytes:
    body = _HEAD.pack(index) + filler
    return body + hashlib.sha256(body).digest()


def _check(payload: bytes | memoryview) -> int | None:
    """The message's index, or None when its body does not match its digest."""
    data = bytes(payload)
    body, digest = data[:-32], data[-32:]
    if len(data) < _HEAD.size + 32 or hashlib.sha256(body).digest() != digest:
        return None
    return _HEAD.unpack_from(body)[0]


async def _party(name: str, key: str, invitation: str, count: int, size: int,
                 timeout: float) -> dict[str, int]:
    from ..net.identity import Identity, Invitation
    from ..net.session import AsyncParty

    inv = Invitation.from_string(invitation)
    party = await AsyncParty(Identity.load(key), inv).connect()
    peers = [p for p in inv.names if p != name]
    counts = {"sent": 0, "received": 0, "duplicated": 0, "out_of_order": 0,
              "corrupt": 0, "bytes": 0, "unconfirmed": 0}

    filler = os.urandom(max(size - _HEAD.size - 32, 0))

    async def send_all() -> None:
        for i in range(count):
            for peer in peers:
                await party.send(peer, _message(i, filler), kind="soak")
                counts["sent"] += 1
                # send() returns without yielding while the window has room: let the
                # other parties of this process run (connect, receive) in between
                await asyncio.sleep(0)

    sender = asyncio.create_task(send_all())
    expected = dict.fromkeys(peers, 0)
    deadline = time.monotonic() + timeout
    try:
        while any(n < count for n in expected.values()) and time.monotonic() < deadline:
            try:
                env = await party.recv(kind="soak", timeout=max(deadline - time.monotonic(), 1))
            except TimeoutError:
                break
            index = _check(env.payload)
            counts["bytes"] += len(env.payload)
            if index is None:
                counts["corrupt"] += 1
            elif index < expected[env.sender]:
                counts["duplicated"] += 1
            else:
                counts["out_of_order"] += index > expected[env.sender]
                expected[env.sender] = index + 1
                counts["received"] += 1
        await asyncio.wait_for(sender, max(deadline - time.monotonic(), 1))
        try:
            await party.flush(max(deadline - time.monotonic(), 1))
        except TimeoutError:  # a peer that had everything left before our last ack came
            counts["unconfirmed"] += 1  # back through a relay killed meanwhile
    finally:
        sender.cancel()
        await party.close(flush_timeout=5)
    return counts


def _worker(members: list[tuple[str, str, str]], count: int, size: int, timeout: float,
            out: Any) -> None:
    """Run ``members`` (name, key file, invitation) in one event loop; report the sums."""
    async def main() -> list[dict[str, int] | BaseException]:
        return await asyncio.gather(*(_party(n, k, i, count, size, timeout)
                                      for n, k, i in members), return_exceptions=True)

    results = asyncio.run(main())
    total: dict[str, int] = {}
    errors = []
    for r in results:
        if isinstance(r, BaseException):
            errors.append(f"{type(r).__name__}: {r}")
            continue
        for k, v in r.items():
            total[k] = total.get(k, 0) + v
    out.put({"counts": total, "errors": errors[:5], "failed_parties": len(errors)})


class _Flood:
    """Idle sockets from :data:`FLOOD_SOURCE`, renewed as the relay drops them."""

    def __init__(self, port: int, sockets: int) -> None:
        self.port, self.sockets, self.opened = port, sockets, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Flood:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        held: list[socket.socket] = []
        while not self._stop.is_set():
            held = [s for s in held if _open(s)]
            while len(held) < self.sockets and not self._stop.is_set():
                try:
                    s = socket.create_connection(("127.0.0.1", self.port), timeout=1,
                                                 source_address=(FLOOD_SOURCE, 0))
                except OSError:
                    break
                held.append(s)
                self.opened += 1
            self._stop.wait(0.2)
        for s in held:
            s.close()


def _open(s: socket.socket) -> bool:
    try:
        s.setblocking(False)
        if s.recv(1 << 16) == b"":
            s.close()
            return False
    except BlockingIOError:
        return True
    except OSError:
        s.close()
        return False
    return True


def _present(port: int) -> int:
    """Members present on the relay now (its /healthz), 0 while it is down."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return int(json.loads(r.read())["members_present"])
    except (OSError, ValueError, KeyError):
        return 0


def bench_soak(rooms: int = 50, mb: int = 1000, kill_every: float = 3.0,
               message_kb: int = 256, workers: int = 2, flood: int = 32,
               memory_mb: int = 256, timeout: float = 900.0) -> dict[str, Any]:
    """Run the soak; returns the report (see the module docstring). The relay runs with
    ``--memory-mb memory_mb``; ``lost`` counts what had not arrived when the run ended
    (all sent, or ``timeout``). Kills closer than the parties' reconnect backoff (up to
    1 s after an outage of ~0.5 s while a new relay process starts) leave them no time."""
    import psutil

    if rooms < 1 or mb < 1 or kill_every <= 0 or message_kb < 1 or workers < 1:
        raise ValueError("rooms, mb, message_kb and workers must be positive, kill_every > 0")
    size = message_kb << 10
    pairs = rooms * len(PARTIES) * (len(PARTIES) - 1)
    count = max(1, (mb << 20) // (pairs * size))
    ctx = mp.get_context("spawn")
    metrics_port = _free_port()
    with tempfile.TemporaryDirectory() as tmp, \
            RelayProcess.start(extra=["--memory-mb", str(memory_mb), "--metrics-port",
                                      str(metrics_port)]) as relay:
        members: list[tuple[str, str, str]] = []
        for r in range(rooms):
            inv, keys = create_room(PARTIES, Path(tmp) / f"room{r}", relay.host, relay.port,
                                    room=f"soak-{r}")
            members += [(n, str(keys[n]), inv.to_string()) for n in PARTIES]
        n = len(PARTIES)  # the rooms go round-robin to the worker processes
        shares = [[m for r in range(i, rooms, workers) for m in members[r * n:(r + 1) * n]]
                  for i in range(workers)]
        out = ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(share, count, size, timeout, out))
                 for share in shares if share]
        rss_max, kills, started = 0, 0, time.monotonic()
        rejoins: list[float] = []  # seconds from a restart until every party was back
        restarted, present_max = started, 0
        with _Flood(relay.port, flood) as flooder:
            for p in procs:
                p.start()
            next_kill = time.monotonic() + kill_every
            while any(p.is_alive() for p in procs) and time.monotonic() - started < timeout:
                with contextlib.suppress(psutil.Error):
                    rss_max = max(rss_max, psutil.Process(relay.proc.pid).memory_info().rss)
                present = _present(metrics_port)
                present_max = max(present_max, present)
                if restarted is not None and present >= rooms * len(PARTIES):
                    rejoins.append(time.monotonic() - restarted)
                    restarted = None
                if time.monotonic() >= next_kill:
                    relay.kill()
                    relay.restart()
                    kills += 1
                    restarted = time.monotonic()
                    next_kill = restarted + kill_every
                time.sleep(0.1)
            seconds = time.monotonic() - started
            reports = [out.get(timeout=60) for _ in procs]
            for p in procs:
                p.join(30)
                if p.is_alive():
                    p.kill()
            flood_sockets = flooder.opened
    counts: dict[str, int] = {}
    for rep in reports:
        for k, v in rep["counts"].items():
            counts[k] = counts.get(k, 0) + v
    expected = pairs * count
    received = counts.get("received", 0)
    return {
        "rooms": rooms, "parties": rooms * len(PARTIES), "messages_expected": expected,
        "message_kb": message_kb, "mb": round(expected * size / (1 << 20), 1),
        "messages_received": received, "lost": expected - received,
        "duplicated": counts.get("duplicated", 0),
        "out_of_order": counts.get("out_of_order", 0), "corrupt": counts.get("corrupt", 0),
        "failed_parties": sum(r["failed_parties"] for r in reports),
        "unconfirmed_flushes": counts.get("unconfirmed", 0),
        "errors": [e for r in reports for e in r["errors"]][:5],
        "relay_kills": kills, "kill_every_s": kill_every, "seconds": round(seconds, 1),
        "all_back_after_restart_s": {
            "times": len(rejoins),
            "median": round(sorted(rejoins)[len(rejoins) // 2], 2) if rejoins else None,
            "max": round(max(rejoins), 2) if rejoins else None},
        "members_present_max": present_max,
        "relay_rss_max_mb": round(rss_max / (1 << 20), 1), "relay_memory_mb": memory_mb,
        "flood_sockets_opened": flood_sockets, "flood_source": FLOOD_SOURCE,
        "cores": os.cpu_count(),
    }
