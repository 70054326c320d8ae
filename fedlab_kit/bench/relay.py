"""``fedlab bench relay``: encrypted relay throughput next to a plain TCP copy, same run.

Two party processes exchange ``mb`` megabytes through a relay process on loopback (sealed
end to end, chunked, acknowledged); then two processes copy the same number of bytes over
one plain TCP socket. Both are timed from the sender's first byte to the receiver's last
(``time.monotonic`` is system-wide on Linux); digests are checked outside the timed region.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from ..demo.harness import RelayProcess, create_room
from ..net.identity import Identity, Invitation
from ..net.relay.tls import make_self_signed
from ..net.session import Party

CHUNK = 4 << 20


def _payload(msg_bytes: int) -> bytes:
    return os.urandom(msg_bytes)


def _digest_of_stream(payload: bytes, total: int) -> hashlib._Hash:
    """sha256 of ``payload`` repeated (and truncated) to ``total`` bytes."""
    digest, done = hashlib.sha256(), 0
    while done < total:
        part = memoryview(payload)[: min(len(payload), total - done)]
        digest.update(part)
        done += len(part)
    return digest


def _relay_receiver(key: str, invitation: str, total: int, out: Any) -> None:
    party = Party(Identity.load(key), Invitation.from_string(invitation))
    party.recv(kind="start", timeout=60)
    party.send("sender", b"", kind="ready")
    got, parts = 0, []
    while got < total:
        env = party.recv(kind="data", timeout=120)
        parts.append(env.payload)
        got += len(env.payload)
    t_end = time.monotonic()
    digest = hashlib.sha256()
    for p in parts:
        digest.update(p)
    out.put({"t_end": t_end, "digest": digest.hexdigest(), "bytes": got})
    party.close()


def _relay_sender(key: str, invitation: str, total: int, msg_bytes: int, out: Any) -> None:
    party = Party(Identity.load(key), Invitation.from_string(invitation))
    payload = _payload(msg_bytes)
    party.send("receiver", b"", kind="start")
    party.recv(kind="ready", timeout=60)
    t0 = time.monotonic()
    sent = 0
    while sent < total:
        part = memoryview(payload)[: min(msg_bytes, total - sent)]
        party.send("receiver", part, kind="data")
        sent += len(part)
    party.flush(300)
    digest = _digest_of_stream(payload, total)
    out.put({"t0": t0, "digest": digest.hexdigest(), "bytes_sent_wire": party.aio.bytes_sent})
    party.close()


def _tcp_receiver(total: int, port_q: Any, out: Any) -> None:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port_q.put(srv.getsockname()[1])
        conn, _ = srv.accept()
        buf = bytearray(total)
        view, got = memoryview(buf), 0
        while got < total:
            n = conn.recv_into(view[got:], min(CHUNK, total - got))
            if n == 0:
                break
            got += n
        t_end = time.monotonic()
        conn.close()
    out.put({"t_end": t_end, "digest": hashlib.sha256(buf[:got]).hexdigest()})


def _tcp_sender(port: int, total: int, msg_bytes: int, out: Any) -> None:
    payload = _payload(msg_bytes)
    with socket.create_connection(("127.0.0.1", port)) as conn:
        t0 = time.monotonic()
        sent = 0
        while sent < total:
            part = memoryview(payload)[: min(msg_bytes, total - sent)]
            conn.sendall(part)
            sent += len(part)
        conn.shutdown(socket.SHUT_WR)
    digest = _digest_of_stream(payload, total)
    out.put({"t0": t0, "digest": digest.hexdigest()})


def _run_pair(ctx: Any, sender: tuple[Any, tuple[Any, ...]],
              receiver: tuple[Any, tuple[Any, ...]], timeout: float) -> tuple[dict, dict]:
    s_out, r_out = ctx.Queue(), ctx.Queue()
    r = ctx.Process(target=receiver[0], args=(*receiver[1], r_out))
    s = ctx.Process(target=sender[0], args=(*sender[1], s_out))
    r.start()
    s.start()
    try:
        s_res, r_res = s_out.get(timeout=timeout), r_out.get(timeout=timeout)
    finally:
        for p in (s, r):
            p.join(30)
            if p.is_alive():
                p.kill()
    return s_res, r_res


TRANSPORTS = ("tcp", "tls", "ws", "wss")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_relay(mb: int = 500, message_mb: int = 64, timeout: float = 600,
                transport: str = "tcp") -> dict[str, Any]:
    """Measure relay (over ``transport``) and plain-TCP throughput for ``mb`` MiB; returns
    the report dict."""
    if mb <= 0 or message_mb <= 0:
        raise ValueError("--mb and --message-mb must be positive")
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
    total, msg_bytes = mb << 20, min(message_mb, mb) << 20
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        tls, websocket = transport in ("tls", "wss"), transport in ("ws", "wss")
        extra: list[str] = []
        pin = ""
        if tls:
            pin = make_self_signed("127.0.0.1", Path(tmp) / "relay.crt", Path(tmp) / "relay.key")
            extra += ["--tls-cert", str(Path(tmp) / "relay.crt"),
                      "--tls-key", str(Path(tmp) / "relay.key")]
        ws_port = _free_port() if websocket else None
        if ws_port is not None:
            extra += ["--ws-port", str(ws_port)]
        with RelayProcess.start(extra=extra) as relay:
            inv, keys = create_room(["sender", "receiver"], Path(tmp), relay.host, relay.port)
            inv = Invitation.create(relay.host, ws_port or relay.port, inv.room,
                                    list(inv.members), tls=tls, pin=pin, websocket=websocket)
            text = inv.to_string()
            s_res, r_res = _run_pair(
                ctx, (_relay_sender, (str(keys["sender"]), text, total, msg_bytes)),
                (_relay_receiver, (str(keys["receiver"]), text, total)), timeout,
            )
    relay_s = r_res["t_end"] - s_res["t0"]
    port_q = ctx.Queue()
    t_out, tr_out = ctx.Queue(), ctx.Queue()
    tr = ctx.Process(target=_tcp_receiver, args=(total, port_q, tr_out))
    tr.start()
    port = port_q.get(timeout=60)
    ts = ctx.Process(target=_tcp_sender, args=(port, total, msg_bytes, t_out))
    ts.start()
    ts_res, tr_res = t_out.get(timeout=timeout), tr_out.get(timeout=timeout)
    ts.join(30)
    tr.join(30)
    tcp_s = tr_res["t_end"] - ts_res["t0"]
    relay_rate, tcp_rate = mb / relay_s, mb / tcp_s
    return {
        "transport": transport,
        "relay": inv.url,
        "mb": mb,
        "message_mb": msg_bytes >> 20,
        "relay_seconds": round(relay_s, 3),
        "relay_mb_per_s": round(relay_rate, 1),
        "tcp_seconds": round(tcp_s, 3),
        "tcp_mb_per_s": round(tcp_rate, 1),
        "ratio_vs_tcp": round(relay_rate / tcp_rate, 3),
        "relay_bytes_on_wire": s_res["bytes_sent_wire"],
        "relay_digest_ok": s_res["digest"] == r_res["digest"],
        "tcp_digest_ok": ts_res["digest"] == tr_res["digest"],
        "encryption": "AES-256-GCM per frame, X25519+HKDF keys per direction",
        "cores": os.cpu_count(),
    }
