"""The relay's byte stream over a WebSocket (``ws://`` / ``wss://``), for parties behind
HTTP(S) proxies and relays behind reverse proxies (nginx, Caddy).

The WebSocket protocol is the ``websockets`` library's; this module only adapts one
connection to the two objects the relay's code already speaks: a reader with
``readexactly`` over the binary messages that arrive, and a writer with
``write`` / ``drain`` / ``close`` whose bytes leave as binary messages (a background task
sends what was written, so ``write`` without ``drain`` still goes out, as with TCP). The
frames inside are the relay's own (:mod:`.wire`), unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

#: the stream is cut into messages of at most this size (both sides refuse larger ones, so
#: nobody can make the other buffer an unbounded message before the relay's own checks)
MESSAGE_BYTES = 4 << 20
MAX_MESSAGE = MESSAGE_BYTES + 4096
#: messages the library may queue per connection before TCP pushes back (2 x 4 MiB)
MAX_QUEUE = 2


class WsWriter:
    """The writing half: bytes written are sent, in order, as binary messages."""

    def __init__(self, ws: Any, extra: dict[str, Any]) -> None:
        self._ws = ws
        self._extra = extra
        self._buf = bytearray()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._error: BaseException | None = None
        self.transport = self  # set_write_buffer_limits is the only transport call made
        self._sender = asyncio.create_task(self._send_loop())

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Backpressure is the WebSocket's own (``send`` waits for its buffer)."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        self._buf += data
        self._idle.clear()
        self._wake.set()

    async def drain(self) -> None:
        await self._idle.wait()
        if self._error is not None:
            raise ConnectionResetError(f"WebSocket closed: {self._error!r}")

    async def _send_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._buf:
                    data = memoryview(bytes(self._buf))  # slices below copy nothing
                    self._buf.clear()
                    for at in range(0, len(data), MESSAGE_BYTES):
                        await self._ws.send(data[at:at + MESSAGE_BYTES])
                self._idle.set()
                if self._closing:
                    return
        except BaseException as exc:  # gone (or cancelled): writes are dropped, drain says so
            self._error = exc
            self._closing = True
            self._buf.clear()
            self._idle.set()
            if isinstance(exc, asyncio.CancelledError):
                raise

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        self._closer = asyncio.get_running_loop().create_task(self._close())

    async def _close(self) -> None:
        """Send what was written (5 s at most), then close the WebSocket."""
        self._closing = True
        self._wake.set()
        await asyncio.wait({self._sender}, timeout=5)
        if not self._sender.done():  # a stalled network: give up on the rest
            self._sender.cancel()
            await asyncio.wait({self._sender}, timeout=1)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._ws.close(), 5)

    async def wait_closed(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.wait_closed()


class WsReader:
    """The reading half: ``readexactly`` (all the relay's framing needs) pulls binary
    messages only when it needs more bytes, so a fast sender is held back by the
    WebSocket's own flow control (its small message queue, then TCP) instead of filling
    memory here. Cancelling a read (a timeout) loses nothing: what arrived stays buffered."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._buf = bytearray()

    async def readexactly(self, n: int) -> bytes:
        from websockets.exceptions import ConnectionClosed, ConnectionClosedError

        while len(self._buf) < n:
            try:
                message = await self._ws.recv()
            except ConnectionClosedError as exc:  # no clean close: "lost", as a broken TCP
                raise ConnectionResetError(f"WebSocket closed abruptly: {exc}") from None
            except ConnectionClosed:
                partial = bytes(self._buf)
                self._buf.clear()
                raise asyncio.IncompleteReadError(partial, n) from None
            if isinstance(message, str):  # the relay speaks bytes only
                raise asyncio.IncompleteReadError(bytes(self._buf), n)
            self._buf += message
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


def extra_of(ws: Any) -> dict[str, Any]:
    transport = getattr(ws, "transport", None)
    get = transport.get_extra_info if transport is not None else (lambda _n, d=None: d)
    return {"peername": get("peername"), "ssl_object": get("ssl_object")}
