"""Sans-IO protocols and the driver that runs them over a party session.

A protocol is a state machine: :meth:`Protocol.start` and :meth:`Protocol.on_message` return
the messages to send, :attr:`Protocol.done` says when it has its :attr:`Protocol.result`.
It never touches a socket or a clock, so tests feed it envelopes directly; :func:`drive`
moves its messages over a real :class:`~fedlab_kit.session.AsyncParty`.
"""

from __future__ import annotations

import abc
import asyncio
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .envelope import Envelope
from .errors import ProtocolError
from .session import AsyncParty, Party


@dataclass(frozen=True)
class Send:
    """A message a protocol wants sent."""

    to: str
    kind: str
    payload: bytes | bytearray | memoryview


class Protocol(abc.ABC):
    """Base class of sans-IO protocols run by :func:`drive`."""

    #: short name used in session ids and progress reports
    name: str = "protocol"

    def __init__(self) -> None:
        self.done = False
        self.result: Any = None

    @abc.abstractmethod
    def start(self) -> list[Send]:
        """Messages to send first."""

    @abc.abstractmethod
    def on_message(self, env: Envelope) -> list[Send]:
        """Consume one message; return the messages it causes."""

    def progress(self) -> tuple[int, int]:
        """(steps done, steps total) for progress bars; (0, 0) if unknown."""
        return (0, 0)


ProgressCallback = Callable[[str, int, int], None]


async def drive(
    party: AsyncParty, protocol: Protocol, *, session: str | None = None,
    timeout: float | None = None, progress: ProgressCallback | None = None,
) -> Any:
    """Run ``protocol`` over ``party`` until it is done; returns its result.

    ``timeout`` bounds the wait for each incoming message (not the whole run).
    """
    session = session or f"{protocol.name}-{uuid.uuid4().hex[:12]}"

    async def send_all(msgs: Iterable[Send]) -> None:
        for m in msgs:
            await party.send(m.to, m.payload, kind=m.kind, session=session)

    await send_all(protocol.start())
    while not protocol.done:
        env = await party.recv(session=session, timeout=timeout)
        await send_all(protocol.on_message(env))
        if progress is not None:
            progress(protocol.name, *protocol.progress())
    await party.flush(timeout)
    return protocol.result


def run(party: Party, protocol: Protocol, *, session: str | None = None,
        timeout: float | None = None, progress: ProgressCallback | None = None) -> Any:
    """Blocking :func:`drive` for a :class:`~fedlab_kit.session.Party`."""
    return party.run(drive(party.aio, protocol, session=session, timeout=timeout,
                           progress=progress))


class RollCall(Protocol):
    """Every party tells every peer a small JSON document (e.g. what data it brings).

    The result maps each party name (self included) to its document. This is the first
    step of every joint job: it checks that all parties are present, speak the same kit
    version and agree on the job before any data moves.
    """

    name = "rollcall"

    def __init__(self, me: str, peers: list[str], info: dict[str, Any]) -> None:
        super().__init__()
        self.me, self.peers = me, list(peers)
        self.docs: dict[str, Any] = {me: info}
        self._payload = msgspec.json.encode(info)

    def start(self) -> list[Send]:
        return [Send(p, "rollcall", self._payload) for p in self.peers]

    def on_message(self, env: Envelope) -> list[Send]:
        if env.kind != "rollcall" or env.sender not in self.peers:
            raise ProtocolError(f"roll call: unexpected {env.kind!r} from {env.sender!r}")
        if env.sender in self.docs:
            raise ProtocolError(f"roll call: {env.sender!r} answered twice")
        try:
            self.docs[env.sender] = msgspec.json.decode(env.payload)
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"roll call: {env.sender!r} sent invalid JSON") from exc
        if len(self.docs) == len(self.peers) + 1:
            self.done, self.result = True, dict(sorted(self.docs.items()))
        return []

    def progress(self) -> tuple[int, int]:
        return (len(self.docs), len(self.peers) + 1)


@dataclass
class LocalNetwork:
    """Runs several sans-IO protocols against each other in memory (for tests and docs)."""

    protocols: dict[str, Protocol]
    delivered: int = 0
    _queue: list[Envelope] = field(default_factory=list)

    def run(self, max_messages: int = 1_000_000) -> dict[str, Any]:
        seqs: dict[tuple[str, str], int] = {}

        def post(sender: str, msgs: list[Send]) -> None:
            for m in msgs:
                if m.to not in self.protocols:
                    raise ProtocolError(f"{sender} sent to unknown party {m.to!r}")
                seq = seqs.get((sender, m.to), 0)
                seqs[(sender, m.to)] = seq + 1
                self._queue.append(Envelope(sender, m.to, "local", m.kind, seq, bytes(m.payload)))

        for name, proto in self.protocols.items():
            post(name, proto.start())
        while self._queue:
            if self.delivered >= max_messages:
                raise ProtocolError("local network: message limit reached (protocol loops?)")
            env = self._queue.pop(0)
            self.delivered += 1
            post(env.recipient, self.protocols[env.recipient].on_message(env))
        stuck = [n for n, p in self.protocols.items() if not p.done]
        if stuck:
            raise ProtocolError(f"protocols stopped without finishing: {stuck}")
        return {n: p.result for n, p in self.protocols.items()}


async def gather_drive(pairs: list[tuple[AsyncParty, Protocol]], session: str) -> list[Any]:
    """Drive several parties in one event loop (tests, single-kernel walkthroughs)."""
    return list(await asyncio.gather(*(drive(p, proto, session=session) for p, proto in pairs)))
