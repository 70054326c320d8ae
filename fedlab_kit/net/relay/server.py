"""The message relay: routes sealed frames between named parties of a room.

The relay authenticates each party against the room roster (Ed25519 signature over a fresh
challenge), announces presence, and keeps one mailbox per member: frames wait there, numbered
per recipient, until the recipient acknowledges them, so a party that reconnects resumes
exactly where it was. A full mailbox stops the relay from reading the senders that fill it
(backpressure), so memory stays bounded. Payloads are never decoded. The relay keeps state in
memory only: after a relay restart the parties resume end to end (see :mod:`fedlab_kit.net.link`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ...errors import InputError, InvitationError
from ..identity import Invitation, check_name
from . import tls, wire, ws
from .grants import RoomGrant, load_organisers
from .metrics import RelayStats
from .rooms import Mailbox, MemoryBudget, Room
from .wire import T

log = logging.getLogger("fedlab.relay")
FULL_NOTICE_SECONDS = 30.0  # a sender held back by the memory cap is told at most this often


class Reject(Exception):
    """A join or frame the relay refuses; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Connection:
    name: str
    instance: bytes
    writer: asyncio.StreamWriter
    peer: str
    told_full: float = -1e9  # when it was last told that the relay's memory cap holds it

    def send(self, data: bytes, body: bytes = b"") -> None:
        if not self.writer.is_closing():
            self.writer.write(data)
            if body:
                self.writer.write(body)


@dataclass
class RelayConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    max_frame: int = wire.DEFAULT_MAX_FRAME
    mailbox_bytes: int = 128 << 20
    heartbeat_timeout: float = 30.0
    hello_timeout: float = 10.0
    max_connections: int = 512  # authenticated members
    max_pending: int = 128  # connections still in the handshake, all sources together
    max_pending_per_address: int = 8  # ... and from one source address
    max_rooms: int = 1000
    rooms_file: Path | None = None  # these rooms exist (invitations, one per line)
    organisers: Path | None = None  # party cards whose grants open rooms
    #: anyone may open a room by joining it; None: only on a loopback address and with
    #: neither rooms_file nor organisers
    open_rooms: bool | None = None
    memory_bytes: int = 1 << 30  # all mailboxes together
    room_idle_seconds: float = 86400.0  # a room nobody joined for this long is closed
    sweep_seconds: float = 30.0  # how often idle and expired rooms are looked for
    tls_cert: Path | None = None  # PEM certificate (and key) to speak TLS on the port(s)
    ws_port: int | None = None  # also accept WebSocket connections here (any path)
    tls_key: Path | None = None
    metrics_port: int | None = None  # /healthz and /metrics (Prometheus) on this port
    metrics_host: str = "127.0.0.1"  # ... on this address (monitoring is local by default)
    #: reverse proxies (addresses or networks) whose X-Forwarded-For names the party
    trusted_proxies: tuple[str, ...] = ()


def address_of(peer: Any) -> str:
    """The IP address of a ``peername`` (the text itself for anything else)."""
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)


def in_networks(address: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
                ) -> bool:
    """Whether ``address`` (an IP address as text) lies in one of ``networks``."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def source_of(peer: Any) -> str:
    """The source a connection counts against in the handshake limits: its IPv4 address,
    or its IPv6 /64 (one site or host holds a whole /64)."""
    text = address_of(peer)
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def forwarded_for(header: str | None, peer: str,
                  proxies: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str:
    """The party's address behind trusted reverse proxies: the right-most X-Forwarded-For
    entry that is not itself a trusted proxy (entries left of it are the client's claim)."""
    hops = [h.strip() for h in (header or "").split(",") if h.strip()]
    current = peer
    while hops and in_networks(current, proxies):
        current = hops.pop()
    return current


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address to listen on) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RelayServer:
    """An asyncio relay. ``await start()``, then ``await serve_forever()`` or ``close()``."""

    def __init__(self, config: RelayConfig | None = None) -> None:
        self.config = config or RelayConfig()
        self.epoch = secrets.token_hex(8)
        self.rooms: dict[str, Room] = {}
        self.budget = MemoryBudget(self.config.memory_bytes)
        self.stats = RelayStats()
        self._space = asyncio.Condition()  # notified whenever mailbox bytes are freed
        config = self.config
        if (config.tls_cert is None) != (config.tls_key is None):
            raise InputError("TLS needs both a certificate and its key (--tls-cert, --tls-key)")
        self.organisers = (load_organisers(config.organisers) if config.organisers is not None
                           else set())
        invited = config.rooms_file is not None or bool(self.organisers)
        self.open_rooms = (not invited and is_loopback(config.host)
                           if config.open_rooms is None else config.open_rooms)
        if config.open_rooms is None and not invited and not self.open_rooms:
            raise InputError(
                f"a relay listening on {config.host} opens rooms only from invitations given "
                "to it (--rooms FILE) or signed by an organiser it trusts (--organisers FILE); "
                "--open-rooms lets anyone who reaches it open a room (a closed network only)")
        self._sweeper: asyncio.Task[None] | None = None
        self._metrics_server: Any = None
        try:
            self._proxies = [ipaddress.ip_network(p, strict=False)
                             for p in config.trusted_proxies]
        except ValueError as exc:
            raise InputError(f"--trusted-proxy: {exc}") from None
        self._ws_server: Any = None
        self._ssl = (tls.server_context(self.config.tls_cert, self.config.tls_key)
                     if self.config.tls_cert is not None else None)
        #: the pin parties check (``sha256:<hex>`` of the certificate), "" without TLS
        self.pin = tls.pin_of_file(self.config.tls_cert) if self.config.tls_cert else ""
        self._server: asyncio.Server | None = None
        self._pending: dict[str, int] = {}  # source address -> connections in handshake
        self._members = 0  # authenticated connections
        self._handlers: set[asyncio.Task[None]] = set()
        if self.config.rooms_file is not None:
            self._load_rooms(self.config.rooms_file)

    def _load_rooms(self, path: Path) -> None:
        for line in Path(path).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                inv = Invitation.from_string(line)
                self.rooms[inv.room] = Room.new(inv.room, inv.roster(), self.budget, kept=True)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    @property
    def ws_port(self) -> int | None:
        """The WebSocket port (``None`` without ``ws_port``)."""
        if self._ws_server is None:
            return None
        return next(iter(self._ws_server.sockets)).getsockname()[1]

    async def start(self) -> None:
        # TLS starts inside the handler, once the connection is counted (a flood of
        # stalled TLS handshakes then fills only the handshake slots)
        self._server = await asyncio.start_server(
            self._handle, self.config.host, self.config.port, limit=8 << 20)
        if self.config.ws_port is not None:
            from websockets.asyncio.server import serve

            self._ws_server = await serve(
                self._ws_handle, self.config.host, self.config.ws_port, ssl=self._ssl,
                compression=None, max_size=ws.MAX_MESSAGE, max_queue=ws.MAX_QUEUE,
                ping_interval=None, open_timeout=self.config.hello_timeout,
                ssl_handshake_timeout=self.config.hello_timeout if self._ssl else None,
                create_connection=self._counted_ws_connection())
        if self.config.metrics_port is not None:
            from .metrics import serve_metrics

            self._metrics_server = await serve_metrics(self, self.config.metrics_host,
                                                       self.config.metrics_port)
        self._sweeper = asyncio.create_task(self._sweep_forever())
        log.info("relay listening on %s:%d (epoch %s)", self.config.host, self.port, self.epoch)

    @property
    def metrics_port(self) -> int | None:
        """The /healthz and /metrics port (``None`` without ``metrics_port``)."""
        if self._metrics_server is None:
            return None
        return next(iter(self._metrics_server.sockets)).getsockname()[1]

    def sweep(self, now: float | None = None) -> list[str]:
        """Close the rooms nobody is in whose grant expired or that stayed idle for
        ``room_idle_seconds`` (rooms from the rooms file are emptied, not forgotten);
        returns their names. Their waiting frames are dropped: parties that come back
        resume end to end, as after a relay restart."""
        wall, mono = time.time() if now is None else now, time.monotonic()
        closed = []
        for name, room in list(self.rooms.items()):
            if room.present():
                continue
            idle, expired = room.idle_for(mono), room.expired(wall)
            if expired or idle >= self.config.room_idle_seconds:
                for mailbox in room.mailboxes.values():
                    mailbox.clear()
                if room.kept and not expired:
                    self.rooms[name] = Room.new(name, room.roster, self.budget, kept=True)
                else:
                    del self.rooms[name]
                closed.append(name)
                self.stats.rooms_closed += 1
                log.info("room %s closed (%s)", name,
                         "grant expired" if expired else f"idle {idle:.0f} s")
        return closed

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_seconds)
            if self.sweep():
                async with self._space:
                    self._space.notify_all()

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def close(self) -> None:
        """Stop listening and drop every connection (parties will reconnect elsewhere)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._metrics_server is not None:
            self._metrics_server.close()
        if self._server is not None:
            self._server.close()
        if self._ws_server is not None:
            self._ws_server.close(close_connections=False)  # the handlers end them below
        for task in list(self._handlers):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        if self._ws_server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws_server.wait_closed(), 5)

    # ------------------------------------------------------------------ joining
    def _join_room(self, hello: wire.Hello, nonce: bytes) -> Room:
        """The room ``hello`` joins, once its signature proves the member's key; a room
        opens only as the relay's policy allows (see :meth:`_may_open`)."""
        try:
            check_name(hello.room, "room name")
            check_name(hello.name)
            for member in hello.roster:
                check_name(member)
        except InvitationError as exc:
            raise Reject("bad-name", str(exc)) from None
        room = self.rooms.get(hello.room)
        if room is not None and room.roster != hello.roster:
            raise Reject(
                "roster-mismatch",
                f"room {hello.room!r} exists with other members or keys; "
                "check that every party uses the same invitation",
            )
        if not 2 <= len(hello.roster) <= 16 or any(len(k) != 32 for k in hello.roster.values()):
            raise Reject("bad-roster", "a room needs 2-16 members with 32-byte keys")
        if hello.name not in hello.roster:
            raise Reject(
                "not-a-member", f"{hello.name!r} is not a member of room {hello.room!r}"
            )
        self._authenticate(hello, nonce)
        if room is not None and room.expired():
            raise Reject("room-expired", f"the organiser's grant of room {hello.room!r} has "
                         "expired; ask the organiser for a new invitation")
        if room is None:
            expires = self._may_open(hello)
            if len(self.rooms) >= self.config.max_rooms:
                raise Reject("too-many-rooms", "the relay's room limit is reached")
            room = self.rooms[hello.room] = Room.new(hello.room, hello.roster, self.budget,
                                                     expires=expires)
            self.stats.rooms_opened += 1
            log.info("room %s opened with members %s", room.name, sorted(room.roster))
        return room

    def _may_open(self, hello: wire.Hello) -> int:
        """Whether ``hello`` may open its room: the expiry of its grant (0: none needed).
        The grant's signature binds the room name and roster; joining then proves the
        member holds its key, so a grant copied from an invitation opens only that room
        for those members."""
        if hello.grant and self.organisers:
            try:
                grant = RoomGrant.from_string(hello.grant)
                grant.check(hello.room, hello.roster, self.organisers)
            except InvitationError as exc:
                raise Reject("bad-grant", str(exc)) from None
            return grant.expires
        if self.open_rooms:
            return 0
        how = ("an invitation signed by an organiser it trusts (fedlab invite --sign-with)"
               if self.organisers else "the invitations its operator gave it (--rooms)")
        raise Reject("unknown-room", f"room {hello.room!r} does not exist on this relay, "
                     f"which opens rooms only from {how}")

    def _authenticate(self, hello: wire.Hello, nonce: bytes) -> None:
        key = Ed25519PublicKey.from_public_bytes(hello.roster[hello.name])
        msg = wire.auth_message(nonce, hello.room, hello.name, hello.roster)
        try:
            key.verify(hello.signature, msg)
        except InvalidSignature:
            raise Reject(
                "bad-credential",
                f"credential of {hello.name!r} does not match the key pinned for room "
                f"{hello.room!r}",
            ) from None

    # -------------------------------------------------------------- connections
    def _end_pending(self, address: str) -> bool:
        """One handshake from ``address`` is over; returns False (no longer pending)."""
        left = self._pending.get(address, 0) - 1
        if left > 0:
            self._pending[address] = left
        else:
            self._pending.pop(address, None)
        return False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # relay shutting down
            await self._connection(reader, writer, tls=self._ssl is not None)

    def _counted_ws_connection(self) -> type:
        """websockets' server connection, counted against the handshake limits from the
        moment it exists (after TLS for wss) until the relay protocol takes it over, so
        sockets that never finish the HTTP upgrade fill only their own address's slots
        (a trusted proxy's connections meet only the relay-wide limit)."""
        from websockets.asyncio.server import ServerConnection

        relay = self

        class CountedConnection(ServerConnection):
            counted_as: str | None = None

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                address = address_of(transport.get_extra_info("peername"))
                source = source_of(address)
                if relay._admit(source, proxy=in_networks(address, relay._proxies)):
                    self.counted_as = source
                else:
                    relay.stats.reject("busy")
                    transport.abort()  # type: ignore[attr-defined]

            def connection_lost(self, exc: Exception | None) -> None:
                relay._uncount(self)
                super().connection_lost(exc)

        return CountedConnection

    def _admit(self, source: str, *, proxy: bool = False) -> bool:
        """Count a connection from ``source`` in the handshake limits; False (not counted)
        when they are reached, and the caller refuses it as ``busy``."""
        self._pending[source] = self._pending.get(source, 0) + 1
        if ((not proxy and self._pending[source] > self.config.max_pending_per_address)
                or sum(self._pending.values()) > self.config.max_pending
                or self._members >= self.config.max_connections):
            return self._end_pending(source)
        return True

    def _uncount(self, connection: Any) -> None:
        """A WebSocket's upgrade is over (taken over by the relay protocol, or closed)."""
        if connection.counted_as is not None:
            self._end_pending(connection.counted_as)
            connection.counted_as = None

    async def _ws_handle(self, socket: Any) -> None:
        """A WebSocket connection: the same relay protocol over its binary messages."""
        self._uncount(socket)  # counted again, under its party's address, from here
        reader = ws.WsReader(socket)
        writer = ws.WsWriter(socket, ws.extra_of(socket))
        source = None
        if self._proxies:  # the proxy's own address (not its /64) is what it is trusted by
            peer = address_of(writer.get_extra_info("peername"))
            source = source_of(forwarded_for(socket.request.headers.get("X-Forwarded-For"),
                                             peer, self._proxies))
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await self._connection(reader, writer, source=source)  # type: ignore[arg-type]
        finally:
            await writer._close()

    async def _connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
        tls: bool = False, source: str | None = None,
    ) -> None:
        """One party's connection: counted, (TLS,) challenged, joined, then served.
        ``source``: the address it counts against (default: its peer address)."""
        peer = writer.get_extra_info("peername")
        peername = str(peer) if source is None else f"{source} (via {peer})"
        address = source_of(peer) if source is None else source
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        conn: Connection | None = None
        room: Room | None = None
        reason = "left"
        # until authenticated: counted against the handshake limits. Members never compete
        # with handshakes: a flood of idle sockets fills only the handshake slots (per
        # address first), and a busy client retries
        pending = self._admit(address)
        try:
            if not pending:
                if tls:  # no TLS for it: closing before the handshake says "busy"
                    self.stats.reject("busy")
                    writer.transport.abort()
                    return
                raise Reject("busy", "the relay has too many connections; try again later")
            if tls:
                await writer.start_tls(self._ssl, ssl_handshake_timeout=self.config.hello_timeout)
            writer.transport.set_write_buffer_limits(high=8 << 20)
            nonce = os.urandom(32)
            challenge = wire.Challenge(
                wire.PROTOCOL_VERSION, nonce, self.epoch, self.config.max_frame
            )
            writer.write(wire.control(T.CHALLENGE, challenge))
            kind, body = await asyncio.wait_for(
                wire.read_frame(reader, 64 << 10), self.config.hello_timeout
            )
            if kind != T.HELLO:
                raise Reject("protocol", f"expected HELLO, got {kind.name}")
            hello = wire.decode_control(body, wire.Hello)
            if hello.version != wire.PROTOCOL_VERSION:
                raise Reject("version", f"relay speaks version {wire.PROTOCOL_VERSION}")
            room = self._join_room(hello, nonce)
            mailbox = room.mailboxes[hello.name]
            if mailbox.conn is not None:
                old = mailbox.conn
                if old.instance != hello.instance:
                    raise Reject(
                        "duplicate-name",
                        f"party {hello.name!r} is already connected to room {room.name!r} "
                        f"from another process ({old.peer})",
                    )
                old.writer.close()  # same process reconnecting: the new connection wins
                mailbox.conn = None
            conn = Connection(hello.name, hello.instance, writer, peername)
            if hello.epoch == room.epoch:  # resuming this incarnation of the room
                await self._ack(mailbox, hello.last_seq)
            mailbox.conn = conn
            pending = self._end_pending(address)
            self._members += 1
            welcome = wire.Welcome(room.epoch, room.present(), self.config.max_frame,
                                   self.config.mailbox_bytes)
            conn.send(wire.control(T.WELCOME, welcome))
            self._announce(room, hello.name, "joined")
            log.info("%s joined room %s from %s", hello.name, room.name, peername)
            deliver = asyncio.create_task(self._deliver(conn, mailbox))
            try:
                reason = await self._read_loop(reader, conn, room)
            finally:
                deliver.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await deliver
        except Reject as exc:
            log.warning("rejected %s: %s", peername, exc)
            self.stats.reject(exc.code)
            writer.write(wire.control(T.ERROR, wire.Error(exc.code, str(exc))))
        except wire.WireError as exc:
            log.warning("bad frame from %s: %s", conn.name if conn else peername, exc)
            self.stats.reject("bad-frame")
            writer.write(wire.control(T.ERROR, wire.Error("bad-frame", str(exc))))
        except asyncio.TimeoutError:
            reason = "lost"
            if conn is None:
                writer.write(wire.control(T.ERROR, wire.Error("timeout", "no HELLO in time")))
        except (asyncio.IncompleteReadError, ConnectionError):
            reason = "lost" if conn is not None else reason
        finally:
            if pending:
                self._end_pending(address)
            elif conn is not None:
                self._members -= 1
            if conn is not None and room is not None:
                mailbox = room.mailboxes[conn.name]
                if mailbox.conn is conn:
                    mailbox.conn = None
                    room.idle_since = time.monotonic()
                    self._announce(room, conn.name, reason)
                    log.info("%s %s room %s", conn.name, reason, room.name)
            with contextlib.suppress(Exception):
                writer.close()
                await asyncio.wait_for(writer.wait_closed(), 2)

    async def _read_loop(
        self, reader: asyncio.StreamReader, conn: Connection, room: Room
    ) -> str:
        mailboxes = room.mailboxes
        while True:
            try:
                kind, body = await asyncio.wait_for(
                    wire.read_frame(reader, self.config.max_frame), self.config.heartbeat_timeout
                )
            except asyncio.IncompleteReadError as exc:
                return "left" if not exc.partial else "lost"
            if kind == T.SEND:
                recipient, payload = wire.parse_send(body)
                target = mailboxes.get(recipient)
                if target is None or recipient == conn.name:
                    err = wire.Error(
                        "unknown-recipient", f"{recipient!r} is not a peer in {room.name}", False
                    )
                    conn.send(wire.control(T.ERROR, err))
                    continue
                self.stats.frames_in += 1
                self.stats.bytes_in += len(payload)
                await self._wait_space(target, conn)
                target.put(conn.name, payload)
            elif kind == T.ACK:
                await self._ack(mailboxes[conn.name], wire.parse_ack(body))
            elif kind == T.PING:
                conn.send(wire.frame(T.PONG))
            elif kind == T.BYE:
                return "left"
            else:
                raise wire.WireError(f"a party may not send {kind.name} frames")

    async def _ack(self, mailbox: Mailbox, seq: int) -> None:
        if mailbox.ack(seq):
            async with self._space:
                self._space.notify_all()

    async def _wait_space(self, mailbox: Mailbox, sender: Connection) -> None:
        """Wait until ``mailbox`` is below its own cap and all mailboxes together are below
        the relay's memory cap (an empty mailbox always takes one frame, so every room
        makes progress). The sender is told when the relay-wide cap holds it back (at most
        every FULL_NOTICE_SECONDS)."""
        def room_for_it() -> bool:
            return not mailbox.items or (mailbox.size < self.config.mailbox_bytes
                                         and not self.budget.full)

        if room_for_it():
            return
        if self.budget.full and time.monotonic() - sender.told_full > FULL_NOTICE_SECONDS:
            sender.told_full = time.monotonic()
            self.stats.reject("relay-full")
            sender.send(wire.control(T.ERROR, wire.Error(
                "relay-full", f"the relay holds {self.budget.used >> 20} MiB of undelivered "
                "messages, its limit; sending resumes as recipients read theirs", False)))
        async with self._space:
            await self._space.wait_for(room_for_it)

    async def _deliver(self, conn: Connection, mailbox: Mailbox) -> None:
        sent = mailbox.items[0][0] - 1 if mailbox.items else mailbox.next_seq - 1
        writer = conn.writer
        while True:
            mailbox.changed.clear()
            while mailbox.items and sent < mailbox.next_seq - 1:
                first = mailbox.items[0][0]
                seq, sender, body = mailbox.items[max(sent + 1 - first, 0)]
                writer.write(wire.deliver_head(seq, sender, len(body)))
                writer.write(body)
                self.stats.frames_out += 1
                self.stats.bytes_out += len(body)
                sent = seq
                await writer.drain()
            await mailbox.changed.wait()

    def _announce(self, room: Room, party: str, event: str) -> None:
        frame = wire.control(T.PRESENCE, wire.Presence(party, event))
        for name, mb in room.mailboxes.items():
            if name != party and mb.conn is not None:
                mb.conn.send(frame)


async def run_relay(config: RelayConfig, ready: asyncio.Event | None = None) -> None:
    """Run a relay until cancelled."""
    server = RelayServer(config)
    await server.start()
    if ready is not None:
        ready.set()
    await server.serve_forever()
