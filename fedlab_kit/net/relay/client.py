"""A party's connection to the relay: handshake, heartbeats, relay-level acks, reconnect.

Frames from the relay are numbered per recipient; the connection acknowledges them and, on
reconnecting to the same relay process (same epoch), names the last one it received, so the
relay resends exactly what is missing. Whatever a restarted relay lost is recovered end to
end by the party (:mod:`fedlab_kit.net.link`), which :class:`RelayConnection` tells about each
(re)connection through ``on_connected``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...errors import RelayRejected, RelayUnavailable
from ..identity import Identity, Invitation
from . import tls, wire, ws
from .wire import T

log = logging.getLogger("fedlab.client")

# relay rejections worth retrying while reconnecting (the old connection may linger)
_RETRYABLE = {"duplicate-name", "busy", "unavailable"}


@dataclass
class ClientConfig:
    heartbeat: float = 5.0  # seconds between pings
    dead_after: float = 30.0  # no frame from the relay for this long: reconnect
    reconnect_timeout: float = 120.0  # give up after this long without a connection
    #: WebSocket relays: True takes the proxy from $HTTPS_PROXY / $HTTP_PROXY (and
    #: $NO_PROXY); a URL names one; None connects directly
    proxy: str | bool | None = True
    ack_bytes: int = 4 << 20  # acknowledge after this many bytes, or when idle


def _jittered(delay: float) -> float:
    """A backoff delay spread over [delay/2, delay], so parties turned away together (a
    relay restart, ``busy``) do not all come back in the same instant."""
    return random.uniform(delay / 2, delay)


def _pinned_connection(pin: str, url: str, wrong: list[RelayRejected]) -> Any:
    """A websockets client connection that checks the relay's pin as soon as TLS is up
    (inside a proxy's tunnel too), before its HTTP upgrade request is written; a wrong
    pin aborts the connection and is left in ``wrong``."""
    from websockets.asyncio.client import ClientConnection

    class PinnedConnection(ClientConnection):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            try:
                tls.check_pin(transport.get_extra_info("ssl_object"), pin, url)
            except RelayRejected as exc:
                wrong.append(exc)
                transport.abort()  # type: ignore[attr-defined]

    return PinnedConnection


class RelayConnection:
    """Keeps one party connected to the relay and moves frames in and out."""

    def __init__(
        self,
        identity: Identity,
        invitation: Invitation,
        instance: bytes,
        *,
        on_deliver: Callable[[str, memoryview], None],
        on_connected: Callable[[bool, list[str]], None],
        on_presence: Callable[[str, str], None],
        on_fatal: Callable[[Exception], None],
        config: ClientConfig | None = None,
    ) -> None:
        self.identity, self.invitation, self.instance = identity, invitation, instance
        self.config = config or ClientConfig()
        self._on_deliver, self._on_connected = on_deliver, on_connected
        self._on_presence, self._on_fatal = on_presence, on_fatal
        self.max_frame = wire.DEFAULT_MAX_FRAME
        self.mailbox_bytes = 128 << 20
        self.epoch = ""
        self.last_seq = 0
        self._acked = 0
        self._unacked_bytes = 0
        self._ack_timer: asyncio.TimerHandle | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.reconnects = 0

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Connect once (raising on rejection), then keep the connection up in the background.

        ``on_connected`` has run when this returns, so the caller can send at once.
        """
        deadline = time.monotonic() + self.config.reconnect_timeout
        delay = 0.05
        while True:
            try:
                reader, writer, welcome = await self._open()
                break
            except OSError as exc:
                inv = self.invitation
                raise RelayUnavailable(f"cannot reach the relay at {inv.url} "
                                       f"({exc.strerror or exc}); is `fedlab relay` running?"
                                       ) from None
            except RelayRejected as exc:  # busy: the relay is full for now, so wait and retry
                if exc.code != "busy" or time.monotonic() + delay > deadline:
                    raise
            await asyncio.sleep(_jittered(delay))
            delay = min(delay * 2, 2.0)
        self._connected(writer, True, welcome)
        self._task = asyncio.create_task(self._run(reader, writer))

    def _connected(self, writer: asyncio.StreamWriter, first: bool,
                   welcome: wire.Welcome) -> None:
        self._writer = writer
        self._on_connected(first, welcome.present)
        self.connected.set()

    async def close(self) -> None:
        """Say goodbye to the relay and stop; peers see this party as having left."""
        self._closing = True
        writer = self._writer
        if writer is not None and not writer.is_closing():
            with contextlib.suppress(Exception):
                writer.write(wire.frame(T.BYE))
                await asyncio.wait_for(writer.drain(), 2)
            # let the relay close first: closing with frames still unread in our receive
            # buffer sends a TCP reset, which can destroy the BYE ("lost" instead of "left")
            if self._task is not None:
                await asyncio.wait({self._task}, timeout=2)
            writer.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=5)

    async def _open_websocket(self) -> tuple[Any, Any]:
        """A WebSocket to the relay (through ``$HTTPS_PROXY`` / ``$HTTP_PROXY`` when set)."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import (
            InvalidHandshake,
            InvalidMessage,
            InvalidProxy,
            InvalidProxyStatus,
            InvalidStatus,
            InvalidURI,
        )

        inv = self.invitation
        wrong_pin: list[RelayRejected] = []
        try:
            socket = await connect(
                inv.url, ssl=tls.client_context(inv.pin) if inv.tls else None,
                compression=None, max_size=ws.MAX_MESSAGE, max_queue=ws.MAX_QUEUE,
                ping_interval=None, open_timeout=15, proxy=self.config.proxy,
                create_connection=_pinned_connection(inv.pin, inv.url, wrong_pin)
                if inv.tls and inv.pin else None)
        except Exception as exc:
            if wrong_pin:  # refused right after TLS: the upgrade request never went out
                raise wrong_pin[0] from None
            if isinstance(exc, ConnectionResetError) or (
                    isinstance(exc, InvalidMessage) and isinstance(exc.__cause__, EOFError)):
                raise RelayRejected(f"the relay at {inv.url} closed the WebSocket before "
                                    "answering its upgrade: it is busy or restarting",
                                    "busy") from None  # retried with backoff
            if not isinstance(exc, (InvalidHandshake, InvalidURI, InvalidProxy, ImportError)):
                raise
            status = getattr(getattr(exc, "response", None), "status_code", 0)
            down = isinstance(exc, (InvalidStatus, InvalidProxyStatus)) and status >= 500
            raise RelayRejected(
                f"the WebSocket to the relay at {inv.url} was refused: {exc}"
                + (" (the relay or a proxy in front of it is down; retrying)" if down else
                   " (is the path right? is the proxy setting right and does it allow it?)"),
                "unavailable" if down else "websocket") from None
        reader = ws.WsReader(socket)
        writer = ws.WsWriter(socket, ws.extra_of(socket))
        return reader, writer

    def _raise_error(self, body: bytes) -> None:
        err = wire.decode_control(body, wire.Error)
        raise RelayRejected(f"relay refused {self.identity.name!r}: {err.message}", err.code)

    async def _open(
        self,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, wire.Welcome]:
        inv = self.invitation
        try:
            if inv.websocket:
                reader, writer = await self._open_websocket()
            else:
                reader, writer = await asyncio.open_connection(
                    inv.host, inv.port, limit=8 << 20,
                    ssl=tls.client_context(inv.pin) if inv.tls else None,
                    server_hostname=inv.host if inv.tls else None)
        except (ssl.SSLEOFError, ConnectionResetError) as exc:
            if not inv.tls:
                raise
            raise RelayRejected(f"the relay at {inv.url} closed the connection before TLS "
                                f"({exc}): it is busy or restarting",
                                "busy") from None  # retried with backoff
        except ssl.SSLError as exc:  # before OSError: it is one
            raise RelayRejected(f"TLS with the relay at {inv.url} failed: {exc.reason or exc} "
                                "(does the relay run with --tls-cert? is the invitation's "
                                "address right?)", "tls") from None
        try:
            if inv.tls:
                tls.check_pin(writer.get_extra_info("ssl_object"), inv.pin, inv.url)
            kind, body = await asyncio.wait_for(wire.read_frame(reader, 1 << 16), 15)
            if kind == T.ERROR:  # e.g. busy: refused before the challenge
                self._raise_error(body)
            if kind != T.CHALLENGE:
                raise RelayRejected(f"{inv.url} is not a fedlab relay")
            challenge = wire.decode_control(body, wire.Challenge)
            roster = inv.roster()
            signature = self.identity.sign(
                wire.auth_message(challenge.nonce, inv.room, self.identity.name, roster)
            )
            hello = wire.Hello(  # the room's epoch we last saw: the relay resumes within it
                wire.PROTOCOL_VERSION, inv.room, self.identity.name, roster, signature,
                self.instance, self.epoch, self.last_seq, inv.grant,
            )
            writer.write(wire.control(T.HELLO, hello))
            kind, body = await asyncio.wait_for(wire.read_frame(reader, 1 << 16), 15)
            if kind == T.ERROR:
                self._raise_error(body)
            if kind != T.WELCOME:
                raise RelayRejected(f"unexpected {kind.name} from the relay during the handshake")
            welcome = wire.decode_control(body, wire.Welcome)
        except (wire.WireError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
            writer.close()
            cut_off = not isinstance(exc, wire.WireError)  # a relay restarting: retried
            raise RelayRejected(f"handshake with {inv.url} failed: {exc}",
                                "unavailable" if cut_off else "") from exc
        except BaseException:
            writer.close()
            raise
        if welcome.epoch != self.epoch:  # another relay process, or the room anew
            self.last_seq = self._acked = 0
        self.epoch = welcome.epoch
        self.max_frame = welcome.max_frame
        self.mailbox_bytes = welcome.mailbox_bytes
        writer.transport.set_write_buffer_limits(high=8 << 20)
        return reader, writer, welcome

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await self._serve(reader, writer)
            except Exception as exc:  # any failure of this connection: reconnect
                log.info("%s: connection lost (%s)", self.identity.name, exc)
            finally:
                self.connected.clear()
                self._writer = None
                writer.close()
            if self._closing:
                return
            try:
                reader, writer, welcome = await self._reconnect()
            except Exception as exc:
                self._on_fatal(exc)
                return
            if self._closing:
                writer.close()
                return
            self.reconnects += 1
            self._connected(writer, False, welcome)

    async def _reconnect(
        self,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, wire.Welcome]:
        deadline = time.monotonic() + self.config.reconnect_timeout
        delay = 0.05
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                return await self._open()
            except RelayRejected as exc:
                if exc.code not in _RETRYABLE:
                    raise
                last = exc
            except OSError as exc:
                last = exc
            await asyncio.sleep(_jittered(delay))
            delay = min(delay * 2, 1.0)
        raise RelayUnavailable(
            f"relay {self.invitation.url} unreachable for "
            f"{self.config.reconnect_timeout:.0f} s (last error: {last})"
        )

    # ------------------------------------------------------------------ traffic
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pinger = asyncio.create_task(self._ping(writer))
        try:
            while not self._closing:
                kind, body = await asyncio.wait_for(
                    wire.read_frame(reader, self.max_frame), self.config.dead_after
                )
                if kind == T.DELIVER:
                    seq, sender, payload = wire.parse_deliver(body)
                    if seq <= self.last_seq:
                        continue  # already had it (relay resent after a reconnect)
                    self.last_seq = seq
                    self._unacked_bytes += len(payload)
                    self._on_deliver(sender, payload)
                    if self._unacked_bytes >= min(self.config.ack_bytes,
                                                  self.mailbox_bytes // 8):
                        self._send_ack(writer)
                    elif self._ack_timer is None:
                        self._ack_timer = asyncio.get_running_loop().call_later(
                            0.02, self._send_ack, writer
                        )
                elif kind == T.PRESENCE:
                    p = wire.decode_control(body, wire.Presence)
                    self._on_presence(p.party, p.event)
                elif kind == T.ERROR:
                    err = wire.decode_control(body, wire.Error)
                    log.warning("%s: relay says %s: %s", self.identity.name, err.code, err.message)
                    if err.fatal:
                        raise RelayRejected(err.message)
                elif kind != T.PONG:
                    raise wire.WireError(f"unexpected {kind.name} from the relay")
        finally:
            pinger.cancel()

    def _send_ack(self, writer: asyncio.StreamWriter) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if self.last_seq > self._acked and not writer.is_closing():
            writer.write(wire.ack(self.last_seq))
            self._acked = self.last_seq
            self._unacked_bytes = 0

    async def _ping(self, writer: asyncio.StreamWriter) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat)
            self._send_ack(writer)
            writer.write(wire.frame(T.PING))

    async def send(self, recipient: str, body: bytes) -> None:
        """Send one sealed frame; waits while disconnected. Raises if the write fails."""
        while self._writer is None:
            await self.connected.wait()
        writer = self._writer
        writer.write(wire.send_head(recipient, len(body)))
        writer.write(body)
        await writer.drain()
