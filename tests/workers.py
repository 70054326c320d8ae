"""Party processes for the end-to-end tests (spawned; each is a separate OS process)."""

from __future__ import annotations

import contextlib
import hashlib
import time
from typing import Any

import numpy as np

from fedlab_kit import Identity, Invitation, Party
from fedlab_kit.net.relay.client import ClientConfig
from fedlab_kit.net.session import PartyOptions

FAST = PartyOptions(client=ClientConfig(heartbeat=1.0, dead_after=5.0, reconnect_timeout=60))


def payload(seed: int, size: int) -> bytes:
    return np.random.default_rng(seed).bytes(size)


def ring_exchange(name: str, key: str, invitation: str, to: str, size: int, seed: int,
                  n_small: int, out: Any) -> None:
    """Send one big payload and ``n_small`` numbered messages to ``to``; receive the same."""
    party = Party(Identity.load(key), Invitation.from_string(invitation), FAST)
    big = payload(seed, size)
    out.put(("started", name, time.monotonic()))
    party.send(to, big, kind="big")
    for i in range(n_small):
        party.send(to, i.to_bytes(4, "big"), kind="small")
    env = party.recv(kind="big", timeout=300)
    got_big = (env.sender, hashlib.sha256(env.payload).hexdigest(), time.monotonic())
    small = [int.from_bytes(party.recv(kind="small", timeout=120).payload, "big")
             for _ in range(n_small)]
    party.flush(120)
    extra = []
    with contextlib.suppress(TimeoutError):  # nothing may arrive twice
        extra.append(party.recv(timeout=1.0))
    out.put(("done", name, {"big": got_big, "small": small, "extra": len(extra),
                            "reconnects": party.aio.reconnects}))
    party.close()


def numbered_sender(key: str, invitation: str, to: str, n: int, size: int, out: Any) -> None:
    """Send ``n`` numbered messages of ``size`` bytes, then wait for the receiver's verdict."""
    party = Party(Identity.load(key), Invitation.from_string(invitation), FAST)
    events: list[tuple[str, str]] = []
    party.on_presence(lambda peer, ev: events.append((peer, ev)))
    for i in range(n):
        party.send(to, i.to_bytes(4, "big") * (size // 4), kind="n")
        time.sleep(0.01)
    verdict = party.recv(kind="verdict", timeout=240)
    out.put(("sender", {"verdict": verdict.payload.decode(), "presence": events}))
    party.close()


def numbered_receiver(key: str, invitation: str, n: int, out: Any) -> None:
    """Receive numbered messages, reporting each; the last one sends a verdict."""
    party = Party(Identity.load(key), Invitation.from_string(invitation), FAST)
    out.put(("receiver-up", time.monotonic()))
    seen = []
    while not seen or seen[-1] != n - 1:
        env = party.recv(kind="n", timeout=240)
        i = int.from_bytes(env.payload[:4], "big")
        assert env.payload == i.to_bytes(4, "big") * (len(env.payload) // 4)
        seen.append(i)
        out.put(("got", i))
    party.send(env.sender, b"ok", kind="verdict")
    out.put(("receiver-done", seen))
    party.close()


def chatter(key: str, invitation: str, to: str, rounds: int, size: int, out: Any) -> None:
    """Ping-pong ``rounds`` payloads with ``to``, checking each echo's digest."""
    party = Party(Identity.load(key), Invitation.from_string(invitation), FAST)
    me = party.name
    ok = 0
    for r in range(rounds):
        if me < to:
            data = payload(r, size)
            party.send(to, data, kind="ping")
            echo = party.recv(kind="pong", timeout=120)
            ok += hashlib.sha256(echo.payload).digest() == hashlib.sha256(data).digest()
        else:
            env = party.recv(kind="ping", timeout=120)
            party.send(to, env.payload, kind="pong")
            ok += 1
    party.flush(60)
    out.put((me, ok))
    party.close()
