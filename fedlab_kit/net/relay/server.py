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
import logging
import os
import secrets
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ...errors import InputError, InvitationError
from ..identity import Invitation, check_name
from . import tls, wire, ws
from .wire import T

log = logging.getLogger("fedlab.relay")


class Reject(Exception):
    """A join or frame the relay refuses; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Mailbox:
    """Frames waiting for one member, numbered from 1, kept until acknowledged."""

    items: deque[tuple[int, str, bytes | memoryview]] = field(default_factory=deque)
    next_seq: int = 1
    size: int = 0
    conn: Connection | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    space: asyncio.Condition = field(default_factory=asyncio.Condition)

    def put(self, sender: str, body: bytes | memoryview) -> None:
        self.items.append((self.next_seq, sender, body))
        self.next_seq += 1
        self.size += len(body)
        self.changed.set()

    async def ack(self, seq: int) -> None:
        freed = False
        while self.items and self.items[0][0] <= seq:
            self.size -= len(self.items.popleft()[2])
            freed = True
        if freed:
            async with self.space:
                self.space.notify_all()


@dataclass
class Room:
    name: str
    roster: dict[str, bytes]
    mailboxes: dict[str, Mailbox]

    def present(self) -> list[str]:
        return sorted(n for n, mb in self.mailboxes.items() if mb.conn is not None)


@dataclass
class Connection:
    name: str
    instance: bytes
    writer: asyncio.StreamWriter
    peer: str

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
    rooms_file: Path | None = None  # closed mode: only these rooms; else rooms open on demand
    tls_cert: Path | None = None  # PEM certificate (and key) to speak TLS on the port(s)
    ws_port: int | None = None  # also accept WebSocket connections here (any path)
    tls_key: Path | None = None


class RelayServer:
    """An asyncio relay. ``await start()``, then ``await serve_forever()`` or ``close()``."""

    def __init__(self, config: RelayConfig | None = None) -> None:
        self.config = config or RelayConfig()
        self.epoch = secrets.token_hex(8)
        self.rooms: dict[str, Room] = {}
        self.closed_mode = self.config.rooms_file is not None
        if (self.config.tls_cert is None) != (self.config.tls_key is None):
            raise InputError("TLS needs both a certificate and its key (--tls-cert, --tls-key)")
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
                self.rooms[inv.room] = self._new_room(inv.room, inv.roster())

    @staticmethod
    def _new_room(name: str, roster: dict[str, bytes]) -> Room:
        return Room(name, dict(roster), {n: Mailbox() for n in roster})

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
        self._server = await asyncio.start_server(
            self._handle, self.config.host, self.config.port, limit=8 << 20,
            ssl=self._ssl, ssl_handshake_timeout=self.config.hello_timeout if self._ssl else None,
        )
        if self.config.ws_port is not None:
            from websockets.asyncio.server import serve

            self._ws_server = await serve(
                self._ws_handle, self.config.host, self.config.ws_port, ssl=self._ssl,
                compression=None, max_size=ws.MAX_MESSAGE, max_queue=ws.MAX_QUEUE,
                ping_interval=None, open_timeout=self.config.hello_timeout,
                ssl_handshake_timeout=self.config.hello_timeout if self._ssl else None)
        log.info("relay listening on %s:%d (epoch %s)", self.config.host, self.port, self.epoch)

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def close(self) -> None:
        """Stop listening and drop every connection (parties will reconnect elsewhere)."""
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
    def _join_room(self, hello: wire.Hello) -> Room:
        try:
            check_name(hello.room, "room name")
            check_name(hello.name)
            for member in hello.roster:
                check_name(member)
        except InvitationError as exc:
            raise Reject("bad-name", str(exc)) from None
        room = self.rooms.get(hello.room)
        if room is None:
            if self.closed_mode:
                raise Reject("unknown-room", f"room {hello.room!r} does not exist on this relay")
            if len(self.rooms) >= self.config.max_rooms:
                raise Reject("too-many-rooms", "the relay's room limit is reached")
            if not 2 <= len(hello.roster) <= 16 or any(len(k) != 32 for k in hello.roster.values()):
                raise Reject("bad-roster", "a room needs 2-16 members with 32-byte keys")
            room = self.rooms[hello.room] = self._new_room(hello.room, hello.roster)
            log.info("room %s opened with members %s", room.name, sorted(room.roster))
        elif room.roster != hello.roster:
            raise Reject(
                "roster-mismatch",
                f"room {hello.room!r} exists with other members or keys; "
                "check that every party uses the same invitation",
            )
        if hello.name not in room.roster:
            raise Reject(
                "not-a-member", f"{hello.name!r} is not a member of room {hello.room!r}"
            )
        return room

    def _authenticate(self, hello: wire.Hello, room: Room, nonce: bytes) -> None:
        key = Ed25519PublicKey.from_public_bytes(room.roster[hello.name])
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
            await self._connection(reader, writer)

    async def _ws_handle(self, socket: Any) -> None:
        """A WebSocket connection: the same relay protocol over its binary messages."""
        reader = ws.WsReader(socket)
        writer = ws.WsWriter(socket, ws.extra_of(socket))
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await self._connection(reader, writer)  # type: ignore[arg-type]
        finally:
            await writer._close()

    async def _connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        peername = str(peer)
        address = str(peer[0]) if isinstance(peer, tuple) and peer else peername
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        conn: Connection | None = None
        room: Room | None = None
        reason = "left"
        pending = True  # until authenticated: counted against the handshake limits
        self._pending[address] = self._pending.get(address, 0) + 1
        try:
            # members never compete with handshakes: a flood of idle sockets fills only
            # the handshake slots (per address first), and a busy client retries
            if (self._pending[address] > self.config.max_pending_per_address
                    or sum(self._pending.values()) > self.config.max_pending
                    or self._members >= self.config.max_connections):
                raise Reject("busy", "the relay has too many connections; try again later")
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
            room = self._join_room(hello)
            self._authenticate(hello, room, nonce)
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
            if hello.epoch == self.epoch:
                await mailbox.ack(hello.last_seq)
            mailbox.conn = conn
            pending = self._end_pending(address)
            self._members += 1
            welcome = wire.Welcome(self.epoch, room.present(), self.config.max_frame,
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
            writer.write(wire.control(T.ERROR, wire.Error(exc.code, str(exc))))
        except wire.WireError as exc:
            log.warning("bad frame from %s: %s", conn.name if conn else peername, exc)
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
                await self._wait_space(target)
                target.put(conn.name, payload)
            elif kind == T.ACK:
                await mailboxes[conn.name].ack(wire.parse_ack(body))
            elif kind == T.PING:
                conn.send(wire.frame(T.PONG))
            elif kind == T.BYE:
                return "left"
            else:
                raise wire.WireError(f"a party may not send {kind.name} frames")

    async def _wait_space(self, mailbox: Mailbox) -> None:
        if mailbox.size < self.config.mailbox_bytes:
            return
        async with mailbox.space:
            await mailbox.space.wait_for(
                lambda: mailbox.size < self.config.mailbox_bytes or not mailbox.items
            )

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
