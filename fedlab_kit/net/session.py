"""Party sessions: the analyst's handle on the relay and the peers.

:class:`AsyncParty` is the asyncio API; :class:`Party` runs one in a background thread so that
a Jupyter kernel (and its widgets) stays responsive while messages flow. Both send and
receive :class:`~fedlab_kit.net.frames.Envelope` s sealed end to end for one peer each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import FedlabError, InvitationError, SecurityError, SessionClosed
from ..protocol.envelope import Envelope
from .identity import Identity, Invitation
from .link import Outgoing, PeerLink, new_instance_id
from .relay.client import ClientConfig, RelayConnection
from .sealing import OVERHEAD, PeerSealer

log = logging.getLogger("fedlab.party")
R = TypeVar("R")
ABORT_WAIT = 10.0  # seconds an interrupted call waits for its run to tell the peers
PresenceCallback = Callable[[str, str], None]


@dataclass
class PartyOptions:
    """Tuning knobs; the defaults suit a laptop on a normal network."""

    window: int = 64 << 20  # bytes in flight per peer before waiting for its ack
    max_queued: int = 1 << 30  # send() waits while more than this is unacknowledged
    chunk_size: int | None = None  # default: 4 MiB, or less if the relay's frames are smaller
    client: ClientConfig | None = None


class AsyncParty:
    """One party in one room: ``await connect()``, then ``send`` / ``recv`` envelopes."""

    def __init__(
        self, identity: Identity, invitation: Invitation, options: PartyOptions | None = None
    ) -> None:
        pinned = invitation.card(identity.name)
        if pinned != identity.card:
            raise InvitationError(
                f"the invitation pins other keys for {identity.name!r} than this identity: "
                "use the key file the invitation was made from"
            )
        self.identity, self.invitation = identity, invitation
        self.name = identity.name
        self.peers = [n for n in invitation.names if n != identity.name]
        self.options = options or PartyOptions()
        self.instance = new_instance_id()
        self.presence: dict[str, str] = dict.fromkeys(self.peers, "absent")
        self._sealers = {p: PeerSealer(identity, invitation.card(p), invitation.room)
                         for p in self.peers}
        self._links: dict[str, PeerLink] = {}
        self._control: deque[tuple[str, Outgoing]] = deque()
        self._inbox: deque[Envelope] = deque()
        self._changed: asyncio.Condition | None = None
        self._wake: asyncio.Event | None = None
        self._error: Exception | None = None
        self._conn: RelayConnection | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._presence_callbacks: list[PresenceCallback] = []
        self.bytes_sent = 0
        self.bytes_received = 0

    # ---------------------------------------------------------------- lifecycle
    async def connect(self) -> AsyncParty:
        """Join the room; raises :class:`RelayRejected` if the relay refuses."""
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._conn = RelayConnection(
            self.identity, self.invitation, self.instance,
            on_deliver=self._on_deliver, on_connected=self._on_connected,
            on_presence=self._on_presence, on_fatal=self._abort,
            config=self.options.client,
        )
        await self._conn.start()
        self._pump_task = asyncio.create_task(self._pump())
        return self

    async def close(self, flush_timeout: float | None = 30.0) -> None:
        """Wait (up to ``flush_timeout``) until peers acknowledged everything, then leave."""
        if flush_timeout and self._error is None:
            # peers that have left the room will not acknowledge: do not wait for them
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._until(lambda: all(
                    k.idle for p, k in self._links.items() if self.presence.get(p) != "left")),
                    flush_timeout)
            with contextlib.suppress(asyncio.TimeoutError):  # our last acks to the peers
                await asyncio.wait_for(self._until(lambda: not self._control), 5)
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
        if self._conn is not None:
            await self._conn.close()
        if self._error is None:
            self._error = SessionClosed(f"party {self.name!r} has left the room")
        await self._notify()

    async def __aenter__(self) -> AsyncParty:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def on_presence(self, callback: PresenceCallback) -> None:
        """Call ``callback(peer, event)`` on joined / left / lost / restarted (loop thread)."""
        self._presence_callbacks.append(callback)

    def remove_presence_callback(self, callback: PresenceCallback) -> None:
        if callback in self._presence_callbacks:
            self._presence_callbacks.remove(callback)

    @property
    def reconnects(self) -> int:
        return self._conn.reconnects if self._conn else 0

    # ------------------------------------------------------------------ sending
    async def send(
        self, peer: str, payload: bytes | bytearray | memoryview, *, kind: str = "data",
        session: str = "default",
    ) -> int:
        """Queue a message for ``peer``; returns its sequence number.

        Returns once queued (waits only while too much is unacknowledged). The payload must
        not be modified until :meth:`flush` returns: it is sent from the caller's buffer.
        """
        self._check()
        link = self._link(peer)
        if self._queued() > self.options.max_queued:
            await self._until(lambda: self._queued() <= self.options.max_queued)
            self._check()
        seq = link.queue(payload, session=session, kind=kind)
        self._kick()
        return seq

    async def broadcast(self, payload: bytes, *, kind: str = "data", session: str = "default",
                        peers: list[str] | None = None) -> None:
        for peer in peers or self.peers:
            await self.send(peer, payload, kind=kind, session=session)

    async def flush(self, timeout: float | None = None, *,
                    peers: list[str] | None = None) -> None:
        """Wait until every peer (or each of ``peers``) has acknowledged everything sent."""
        links = [k for p, k in self._links.items() if peers is None or p in peers]
        try:
            await asyncio.wait_for(self._until(lambda: all(k.idle for k in links)), timeout)
        except asyncio.TimeoutError:
            waiting = [p for p, k in self._links.items() if k in links and not k.idle]
            raise TimeoutError(f"{self.name}: {waiting} did not acknowledge everything "
                               f"within {timeout} s (presence: {self.presence})") from None
        self._check()

    async def _until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds or the session failed."""
        assert self._changed is not None
        async with self._changed:
            await self._changed.wait_for(lambda: self._error is not None or predicate())

    def _queued(self) -> int:
        return sum(link.queued_bytes for link in self._links.values())

    def _link(self, peer: str) -> PeerLink:
        if peer not in self._links:
            raise FedlabError(f"{peer!r} is not a peer in room {self.invitation.room!r}; "
                              f"peers: {self.peers}")
        return self._links[peer]

    # ---------------------------------------------------------------- receiving
    async def recv(
        self, *, sender: str | None = None, session: str | None = None, kind: str | None = None,
        timeout: float | None = None,
    ) -> Envelope:
        """Next message matching every given filter (in arrival order)."""
        found: list[Envelope] = []

        def ready() -> bool:
            for env in self._inbox:
                if ((sender is None or env.sender == sender)
                        and (session is None or env.session == session)
                        and (kind is None or env.kind == kind)):
                    found.append(env)
                    return True
            return False

        try:
            await asyncio.wait_for(self._until(ready), timeout)
        except asyncio.TimeoutError:
            what = ", ".join(f"{k}={v!r}" for k, v in
                             (("sender", sender), ("session", session), ("kind", kind)) if v)
            raise TimeoutError(f"{self.name}: no message ({what or 'any'}) "
                               f"within {timeout} s") from None
        if found:
            self._inbox.remove(found[0])
            return found[0]
        self._check()
        raise SessionClosed("unreachable")  # pragma: no cover

    def unrecv(self, env: Envelope) -> None:
        """Put a received message back at the front of the inbox (for the next receiver)."""
        self._inbox.appendleft(env)
        if self._changed is not None:
            asyncio.get_running_loop().create_task(self._notify())

    def waiting(self, *, sender: str, session: str, kind: str) -> list[Envelope]:
        """The messages matching every filter that arrived and were not received yet."""
        return [e for e in self._inbox
                if e.sender == sender and e.session == session and e.kind == kind]

    # ---------------------------------------------------------- relay callbacks
    def _on_connected(self, first: bool, present: list[str]) -> None:
        assert self._conn is not None
        chunk = self.options.chunk_size or min(4 << 20, self._conn.max_frame - OVERHEAD)
        # every peer may fill our mailbox with one window, plus stale frames after a resume:
        # keep the windows small enough that the relay never has to block a sender
        window = max(chunk, min(self.options.window,
                                self._conn.mailbox_bytes // (2 * len(self.peers))))
        for peer in self.peers:
            if peer not in self._links:
                self._links[peer] = PeerLink(self.name, peer, self.instance,
                                             chunk_size=chunk, window=window)
            self._control.append((peer, self._links[peer].on_reconnect()))
            # no events here: after a relay restart peers reconnect one by one, and a
            # transient absence must not abort the protocols that watch presence
            self.presence[peer] = "present" if peer in present else "absent"
        self._kick()

    def _on_presence(self, party: str, event: str) -> None:
        if party in self.presence:
            self.presence[party] = "present" if event == "joined" else event
        asyncio.get_running_loop().create_task(self._notify())  # e.g. close() stops waiting
        for cb in self._presence_callbacks:
            try:
                cb(party, event)
            except Exception:  # a broken callback must not break the session
                log.exception("presence callback failed")

    def _on_deliver(self, sender: str, body: memoryview) -> None:
        if self._error is not None:
            return
        try:
            sealer = self._sealers.get(sender)
            if sealer is None:
                raise SecurityError(sender, "not a member of this room")
            header, data = sealer.open(body)
            events = self._links[sender].on_frame(header, data)
        except SecurityError as exc:
            self._abort(exc)
            return
        self.bytes_received += len(body)
        for out in events.send:
            self._control.append((sender, out))
        if events.peer_restarted:
            self._on_presence(sender, "restarted")
        if events.delivered:
            self._inbox.extend(events.delivered)
        self._kick()
        asyncio.get_running_loop().create_task(self._notify())

    def _abort(self, exc: Exception) -> None:
        if self._error is None:
            log.error("%s: %s", self.name, exc)
            self._error = exc
        asyncio.get_running_loop().create_task(self._notify())
        if self._conn is not None:
            asyncio.get_running_loop().create_task(self._conn.close())

    async def _notify(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    # --------------------------------------------------------------- the pump
    async def _pump(self) -> None:
        """Single writer: control frames first, then data round-robin across peers."""
        assert self._wake is not None and self._conn is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                while await self._pump_once():
                    pass
            except (ConnectionError, OSError) as exc:
                log.info("%s: send interrupted (%s); resuming after reconnect", self.name, exc)
                await self._conn.connected.wait()
                self._kick()
            await self._notify()

    async def _pump_once(self) -> bool:
        conn = self._conn
        assert conn is not None
        sent = False
        while self._control:
            peer, out = self._control.popleft()
            await self._write(conn, peer, out)
            sent = True
        for peer, link in self._links.items():
            for out in link.next_frames(max_frames=4):
                await self._write(conn, peer, out)
                sent = True
            if self._control:
                break
        return sent

    async def _write(self, conn: RelayConnection, peer: str, out: Outgoing) -> None:
        body = self._sealers[peer].seal(out.header, out.data)
        self.bytes_sent += len(body)
        await conn.send(peer, body)


class Party:
    """Blocking facade over :class:`AsyncParty`, with its event loop in a daemon thread.

    Safe to use from a Jupyter cell or a widget callback: the calling thread only waits on
    futures, so the kernel keeps processing widget messages.
    """

    def __init__(
        self, identity: Identity, invitation: Invitation, options: PartyOptions | None = None,
        *, connect_timeout: float = 30.0, cluster: Any = None, executor: Any = None,
    ) -> None:
        """``cluster`` / ``executor``: where this party's heavy work (PSI batches, HE
        histograms) runs, see :func:`fedlab_kit.compute.open_workers`: ``"local:N"`` (a Dask
        LocalCluster started here), ``"tcp://scheduler:8786"`` (the party's own Dask
        cluster), ``"processes:N"``, a ``concurrent.futures.Executor``; default: this
        machine's processes. Only this party's work goes there; its peers see nothing of
        it."""
        from ..compute import open_workers

        self.workers = open_workers(cluster, executor)
        self._own_workers = isinstance(cluster, str)  # opened here: closed with the party
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"fedlab-{identity.name}")
        self._thread.start()
        self.aio = AsyncParty(identity, invitation, options)
        try:
            self._call(self.aio.connect(), connect_timeout)
        except BaseException:
            self._stop_loop()
            self._close_workers()
            raise

    @property
    def name(self) -> str:
        return self.aio.name

    @property
    def peers(self) -> list[str]:
        return self.aio.peers

    @property
    def presence(self) -> dict[str, str]:
        return dict(self.aio.presence)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def _call(self, coro: Coroutine[Any, Any, R], timeout: float | None = None) -> R:
        task: list[asyncio.Task[Any]] = []

        async def tracked() -> R:
            task.append(asyncio.current_task())  # type: ignore[arg-type]
            return await coro

        fut: Future[R] = asyncio.run_coroutine_threadsafe(tracked(), self._loop)
        try:
            return fut.result(timeout)
        except FutureTimeout:  # the builtin TimeoutError from 3.11 on
            if fut.done():  # raised by the coroutine itself, with its own message
                raise
            fut.cancel()
            raise TimeoutError(f"{self.name}: no answer within {timeout} s") from None
        except BaseException:  # e.g. KeyboardInterrupt: "interrupt kernel" in Jupyter
            if not fut.done():
                fut.cancel()  # the run ends in the party's loop too, and tells its peers
                ended = threading.Event()
                if task:
                    self._loop.call_soon_threadsafe(
                        task[0].add_done_callback, lambda _t: ended.set())
                    ended.wait(ABORT_WAIT)
            raise

    def send(self, peer: str, payload: bytes | bytearray | memoryview, *, kind: str = "data",
             session: str = "default") -> int:
        return self._call(self.aio.send(peer, payload, kind=kind, session=session))

    def broadcast(self, payload: bytes, *, kind: str = "data", session: str = "default") -> None:
        self._call(self.aio.broadcast(payload, kind=kind, session=session))

    def recv(self, *, sender: str | None = None, session: str | None = None,
             kind: str | None = None, timeout: float | None = None) -> Envelope:
        return self._call(self.aio.recv(sender=sender, session=session, kind=kind,
                                        timeout=timeout))

    def flush(self, timeout: float | None = None, *, peers: list[str] | None = None) -> None:
        self._call(self.aio.flush(timeout, peers=peers))

    def on_presence(self, callback: PresenceCallback) -> None:
        self._loop.call_soon_threadsafe(self.aio.on_presence, callback)

    def psi(self, ids: Any, **kwargs: Any) -> Any:
        """Private set intersection with peers; see :func:`fedlab_kit.psi.psi`."""
        from ..psi import psi

        return psi(self, ids, **kwargs)

    def run(self, coro: Coroutine[Any, Any, R], timeout: float | None = None) -> R:
        """Run a coroutine on the party's loop (e.g. a protocol driver) and wait for it."""
        return self._call(coro, timeout)

    def close(self, flush_timeout: float | None = 30.0) -> None:
        """Leave the room (idempotent: closing twice is harmless)."""
        if not self._thread.is_alive():
            return
        try:
            self._call(self.aio.close(flush_timeout))
        finally:
            self._stop_loop()
            self._close_workers()

    def _close_workers(self) -> None:
        if self._own_workers and self.workers is not None:
            self.workers.close()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> Party:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
