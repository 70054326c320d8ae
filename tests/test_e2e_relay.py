"""End to end: parties are OS processes talking through a relay process on loopback."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import random
import socket
import struct
import time
from pathlib import Path

import pytest
import workers

from fedlab_kit.demo.harness import RelayProcess, create_room
from fedlab_kit.net.relay import wire

pytestmark = pytest.mark.e2e
CTX = mp.get_context("spawn")


def _drain(q, n: int, timeout: float = 300) -> list:
    return [q.get(timeout=timeout) for _ in range(n)]


def _start(target, *args) -> mp.Process:
    p = CTX.Process(target=target, args=args)
    p.start()
    return p


def _finish(procs: list[mp.Process]) -> None:
    for p in procs:
        p.join(60)
        if p.is_alive():
            p.kill()
        assert p.exitcode == 0, f"{p.name} exited with {p.exitcode}"


def test_three_parties_200mb_survive_relay_kill(tmp_path: Path) -> None:
    size, n_small = 200 << 20, 50
    names = ["a", "b", "c"]
    ring = dict(zip(names, names[1:] + names[:1], strict=True))
    relay = RelayProcess.start(log_path=tmp_path / "relay.log")
    try:
        inv, keys = create_room(names, tmp_path, relay.host, relay.port)
        q = CTX.Queue()
        procs = [_start(workers.ring_exchange, n, str(keys[n]), inv.to_string(), ring[n], size,
                        i, n_small, q) for i, n in enumerate(names)]
        started = _drain(q, 3)
        assert {s[0] for s in started} == {"started"}
        time.sleep(0.4)  # the 600 MB are now on their way
        relay.kill()
        killed_at = time.monotonic()
        time.sleep(0.5)
        relay.restart()
        done = {d[1]: d[2] for d in _drain(q, 3)}
        _finish(procs)
    finally:
        relay.stop()
    for i, n in enumerate(names):
        sender = names[i - 1]
        expected = hashlib.sha256(workers.payload(names.index(sender), size)).hexdigest()
        got_from, digest, finished_at = done[n]["big"]
        assert got_from == sender
        assert digest == expected, f"{n} received corrupted bytes from {sender}"
        assert finished_at > killed_at, "the relay was not killed mid-transfer"
        assert done[n]["small"] == list(range(n_small)), "small messages lost, reordered or doubled"
        assert done[n]["extra"] == 0, "a message was delivered twice"
        assert done[n]["reconnects"] >= 1


def test_killed_party_reconnects(tmp_path: Path) -> None:
    n = 120
    relay = RelayProcess.start()
    try:
        inv, keys = create_room(["sender", "receiver"], tmp_path, relay.host, relay.port)
        q_s, q_r1, q_r2 = CTX.Queue(), CTX.Queue(), CTX.Queue()
        r1 = _start(workers.numbered_receiver, str(keys["receiver"]), inv.to_string(), n, q_r1)
        assert q_r1.get(timeout=60)[0] == "receiver-up"
        s = _start(workers.numbered_sender, str(keys["sender"]), inv.to_string(), "receiver",
                   n, 64 << 10, q_s)
        first = [q_r1.get(timeout=60)[1] for _ in range(20)]
        r1.kill()  # SIGKILL: no goodbye
        r1.join(10)
        assert first == list(range(20))
        r2 = _start(workers.numbered_receiver, str(keys["receiver"]), inv.to_string(), n, q_r2)
        msgs = []
        while True:
            item = q_r2.get(timeout=240)
            if item[0] == "receiver-done":
                seen = item[1]
                break
            msgs.append(item)
        verdict = q_s.get(timeout=120)[1]
        _finish([s, r2])
    finally:
        relay.stop()
    # the new process gets, in order and once each, everything the old one had not taken
    assert seen == list(range(seen[0], n))
    assert seen[0] <= 20 + 64, "more was lost than the old process could have received"
    assert verdict["verdict"] == "ok"
    events = verdict["presence"]
    assert ("receiver", "left") in events or ("receiver", "lost") in events
    assert events.count(("receiver", "joined")) >= 1


def _fuzz_frames(rng: random.Random) -> bytes:
    choice = rng.randrange(8)
    if choice == 0:
        return rng.randbytes(rng.randrange(1, 4096))
    if choice == 1:  # absurd length field
        return struct.pack(">IB", rng.randrange(1 << 25, 1 << 32), 2) + b"x" * 10
    if choice == 2:  # valid header, truncated body, then hang up
        return struct.pack(">IB", 5000, 2) + b"{" * 100
    if choice == 3:  # HELLO that is not JSON
        return wire.frame(wire.T.HELLO, rng.randbytes(200))
    if choice == 4:  # HELLO with a forged signature for an existing room
        hello = wire.Hello(1, "fuzzroom", "a", {"a": b"\1" * 32, "b": b"\2" * 32}, b"\0" * 64)
        return wire.control(wire.T.HELLO, hello)
    if choice == 5:  # SEND before HELLO
        return wire.send_head("b", 3) + b"abc"
    if choice == 6:  # unknown frame type
        return struct.pack(">IB", 1, 200)
    return wire.frame(wire.T.ACK, b"\0\0")  # ACK before HELLO, wrong size


def test_fuzzed_relay_keeps_serving_good_session(tmp_path: Path) -> None:
    relay = RelayProcess.start()
    rng = random.Random(1234)
    errors = 0
    try:
        inv, keys = create_room(["alpha", "beta"], tmp_path, relay.host, relay.port)
        q = CTX.Queue()
        procs = [_start(workers.chatter, str(keys[n]), inv.to_string(), other, 60, 256 << 10, q)
                 for n, other in (("alpha", "beta"), ("beta", "alpha"))]
        for _ in range(300):
            with socket.create_connection((relay.host, relay.port), timeout=5) as sock:
                sock.settimeout(5)
                challenge = sock.recv(1 << 16)
                assert challenge[4] == wire.T.CHALLENGE
                try:
                    sock.sendall(_fuzz_frames(rng))
                    sock.shutdown(socket.SHUT_WR)  # hang up: the relay must not wait for more
                    reply = sock.recv(1 << 16)
                except (ConnectionResetError, BrokenPipeError, TimeoutError):
                    reply = b""
                if reply[4:5] == bytes([wire.T.ERROR]):
                    errors += 1
        results = dict(_drain(q, 2))
        _finish(procs)
        assert relay.proc.poll() is None, "the relay died under fuzzing"
    finally:
        relay.stop()
    assert results == {"alpha": 60, "beta": 60}
    assert errors > 150, f"only {errors} of 300 bad connections got an ERROR frame"


def test_relay_cli_rejects_busy_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        import subprocess
        import sys

        res = subprocess.run([sys.executable, "-m", "fedlab_kit.cli", "relay", "--port",
                              str(port)], capture_output=True, text=True, timeout=60,
                             env={**os.environ})
    assert res.returncode != 0
    assert "cannot listen" in res.stderr
    assert "Traceback" not in res.stderr
