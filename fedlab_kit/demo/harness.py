"""The embedded default: a relay and parties on localhost, each in its own OS process.

Used by ``fedlab demo``, the walkthrough notebook, the end-to-end tests and the benchmarks.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FedlabError
from ..net.identity import Identity, Invitation

READY_PREFIX = "fedlab relay listening on "


@dataclass
class RelayProcess:
    """A relay running as a child process (``fedlab relay``)."""

    host: str
    port: int
    args: list[str]
    proc: subprocess.Popen[str]
    log_path: Path | None = None

    @classmethod
    def start(cls, host: str = "127.0.0.1", port: int = 0, extra: Sequence[str] = (),
              log_path: Path | None = None, timeout: float = 30.0) -> RelayProcess:
        args = [sys.executable, "-m", "fedlab_kit.cli", "relay", "--host", host, *extra]
        proc, port = _spawn_relay(args, port, log_path, timeout)
        return cls(host, port, args, proc, log_path)

    def kill(self) -> None:
        """SIGKILL, as a crash would: no goodbye to anyone."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self, timeout: float = 30.0) -> None:
        """Start a fresh relay process on the same port (after :meth:`kill` or :meth:`stop`)."""
        self.proc, _ = _spawn_relay(self.args, self.port, self.log_path, timeout)

    def __enter__(self) -> RelayProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _spawn_relay(
    args: list[str], port: int, log_path: Path | None, timeout: float
) -> tuple[subprocess.Popen[str], int]:
    stderr = open(log_path, "a") if log_path else subprocess.DEVNULL  # noqa: SIM115
    deadline = time.monotonic() + timeout
    while True:
        proc = subprocess.Popen(
            [*args, "--port", str(port)], stdout=subprocess.PIPE, stderr=stderr, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        line = proc.stdout.readline() if proc.stdout else ""
        if line.startswith(READY_PREFIX):
            return proc, int(line.rsplit(":", 1)[1])
        proc.wait(10)
        if time.monotonic() > deadline:  # e.g. the port is still held by a dying relay
            raise FedlabError(f"relay did not start on port {port}: {line.strip()!r}")
        time.sleep(0.2)


def create_room(
    names: Sequence[str], workdir: str | os.PathLike[str], host: str, port: int,
    room: str | None = None,
) -> tuple[Invitation, dict[str, Path]]:
    """Make an identity per party (key files in ``workdir``) and the room invitation."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    keys: dict[str, Path] = {}
    cards = []
    for name in names:
        ident = Identity.generate(name)
        keys[name] = ident.save(workdir / f"{name}.key")
        cards.append(ident.card)
    inv = Invitation.create(host, port, room, cards)
    (workdir / "invitation.txt").write_text(inv.to_string() + "\n")
    return inv, keys


@dataclass
class PartyProcesses:
    """Parties running a target function each in a spawned OS process."""

    procs: dict[str, multiprocessing.process.BaseProcess] = field(default_factory=dict)

    @classmethod
    def start(cls, target: Callable[..., Any], args: dict[str, tuple[Any, ...]]) -> PartyProcesses:
        ctx = multiprocessing.get_context("spawn")
        procs = {}
        for name, a in args.items():
            p = ctx.Process(target=target, args=a, name=f"fedlab-{name}", daemon=False)
            p.start()
            procs[name] = p
        return cls(procs)

    def join(self, timeout: float | None = None) -> dict[str, int | None]:
        deadline = None if timeout is None else time.monotonic() + timeout
        for p in self.procs.values():
            p.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return {n: p.exitcode for n, p in self.procs.items()}

    def terminate(self) -> None:
        for p in self.procs.values():
            if p.is_alive():
                p.kill()
                p.join(5)
