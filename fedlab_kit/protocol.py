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
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .envelope import Envelope
from .errors import PeerLost, ProtocolError
from .session import AsyncParty, Party


@dataclass(frozen=True)
class Send:
    """A message a protocol wants sent."""

    to: str
    kind: str
    payload: bytes | bytearray | memoryview


@dataclass(frozen=True)
class Compute:
    """CPU-heavy work the driver runs off the event loop; the result comes back through
    :meth:`Protocol.on_computed`. ``fn`` must be a picklable top-level function."""

    key: Hashable
    fn: Callable[..., Any]
    args: tuple[Any, ...]


Action = Send | Compute


class Protocol(abc.ABC):
    """Base class of sans-IO protocols run by :func:`drive`."""

    #: short name used in session ids and progress reports
    name: str = "protocol"

    def __init__(self) -> None:
        self.done = False
        self.result: Any = None

    @abc.abstractmethod
    def start(self) -> list[Action]:
        """Messages to send (and work to start) first."""

    @abc.abstractmethod
    def on_message(self, env: Envelope) -> list[Action]:
        """Consume one message; return the messages (and work) it causes."""

    def on_computed(self, key: Hashable, result: Any) -> list[Action]:
        """Consume the result of a :class:`Compute`; return what it causes."""
        raise ProtocolError(f"{self.name} does not request computations")

    def progress(self) -> tuple[int, int]:
        """(steps done, steps total) for progress bars; (0, 0) if unknown."""
        return (0, 0)


ProgressCallback = Callable[[str, int, int], None]
LOST_GRACE = 1.0  # seconds to take in messages a departed peer sent before it left


async def drive(
    party: AsyncParty, protocol: Protocol, *, session: str | None = None,
    timeout: float | None = None, progress: ProgressCallback | None = None,
    executor: Executor | None = None, max_computing: int = 8,
    watch: Iterable[str] = (),
) -> Any:
    """Run ``protocol`` over ``party`` until it is done; returns its result.

    :class:`Compute` requests run in ``executor`` (a process pool for CPU-bound work; the
    default thread pool otherwise), at most ``max_computing`` at a time, overlapping with
    network traffic. ``timeout`` bounds each wait for a message while nothing is computing.
    If a peer in ``watch`` leaves or restarts, :class:`PeerLost` is raised (a peer that is
    only "lost" may come back with its state, and the links resume).
    """
    session = session or f"{protocol.name}-{uuid.uuid4().hex[:12]}"
    loop = asyncio.get_running_loop()
    backlog: deque[Compute] = deque()
    computing: dict[asyncio.Future[Any], Hashable] = {}
    watched = set(watch)
    lost: list[tuple[str, str]] = []
    lost_event = asyncio.Event()

    def on_presence(peer: str, event: str) -> None:
        # "lost" (heartbeat or a broken connection) may be transient: links resume after it
        if peer in watched and event in ("left", "restarted"):
            lost.append((peer, event))
            lost_event.set()

    async def act(actions: Iterable[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                await party.send(a.to, a.payload, kind=a.kind, session=session)
            else:
                backlog.append(a)
        while backlog and len(computing) < max_computing:
            job = backlog.popleft()
            computing[loop.run_in_executor(executor, job.fn, *job.args)] = job.key

    party.on_presence(on_presence)
    for peer in sorted(watched):  # a peer that left before we started watching
        if party.presence.get(peer) == "left":
            on_presence(peer, "left")
    lost_task = asyncio.ensure_future(lost_event.wait())
    receiving: asyncio.Future[Envelope] | None = None
    try:
        await act(protocol.start())
        while not protocol.done:
            if receiving is None:
                receiving = asyncio.ensure_future(party.recv(session=session))
            done, _ = await asyncio.wait(
                [receiving, lost_task, *computing], timeout=None if computing else timeout,
                return_when=asyncio.FIRST_COMPLETED)
            if not done:
                raise TimeoutError(f"{protocol.name}: no message from the peers within "
                                   f"{timeout} s")
            if lost_task in done:
                # what the peer sent before leaving (e.g. why it stopped) comes first
                if receiving is not None and not receiving.done():
                    await asyncio.wait({receiving}, timeout=LOST_GRACE)
                if receiving is None or not receiving.done():
                    raise PeerLost(protocol.name, *lost[0])
                done = {receiving, *(f for f in done if f in computing)}
            for fut in done:
                if fut is receiving:
                    receiving = None
                    await act(protocol.on_message(fut.result()))
                else:
                    await act(protocol.on_computed(computing.pop(fut), fut.result()))
            if progress is not None:
                progress(protocol.name, *protocol.progress())
    finally:
        party.remove_presence_callback(on_presence)
        for fut in [lost_task, receiving, *computing]:
            if fut is not None:
                fut.cancel()
    await party.flush(timeout)
    return protocol.result


def run(party: Party, protocol: Protocol, *, session: str | None = None,
        timeout: float | None = None, progress: ProgressCallback | None = None,
        executor: Executor | None = None, watch: Iterable[str] = ()) -> Any:
    """Blocking :func:`drive` for a :class:`~fedlab_kit.session.Party`."""
    return party.run(drive(party.aio, protocol, session=session, timeout=timeout,
                           progress=progress, executor=executor, watch=watch))


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

        def post(sender: str, actions: list[Action]) -> None:
            for m in actions:
                if isinstance(m, Compute):  # computed inline, in order
                    post(sender, self.protocols[sender].on_computed(m.key, m.fn(*m.args)))
                    continue
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

