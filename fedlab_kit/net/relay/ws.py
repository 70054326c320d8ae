"""The relay's byte stream over a WebSocket (``ws://`` / ``wss://``), for parties behind
HTTP(S) proxies and relays behind reverse proxies (nginx, Caddy).

The WebSocket protocol is the ``websockets`` library's; this module only adapts one
connection to the two objects the relay's code already speaks: an
:class:`asyncio.StreamReader` fed with the binary messages that arrive, and a writer with
``write`` / ``drain`` / ``close`` whose bytes leave as binary messages (a background task
sends what was written, so ``write`` without ``drain`` still goes out, as with TCP). The
frames inside are the relay's own (:mod:`.wire`), unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

STREAM_LIMIT = 8 << 20
#: the stream is cut into messages of at most this size (both sides refuse larger ones, so
#: nobody can make the other buffer an unbounded message before the relay's own checks)
MESSAGE_BYTES = 4 << 20
MAX_MESSAGE = MESSAGE_BYTES + 4096


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
            raise ConnectionResetError(f"WebSocket closed: {self._error}")

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
        except Exception as exc:  # the connection went: writes are dropped, drain says so
            self._error = exc
            self._closing = True
            self._buf.clear()
            self._idle.set()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        asyncio.get_running_loop().create_task(self._close())

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._sender, 5)
        with contextlib.suppress(Exception):
            await self._ws.close()

    async def wait_closed(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.wait_closed()


def reader_for(ws: Any) -> tuple[asyncio.StreamReader, asyncio.Task[None]]:
    """A StreamReader fed with ``ws``'s binary messages until it closes (then EOF)."""
    reader = asyncio.StreamReader(limit=STREAM_LIMIT)

    async def pump() -> None:
        try:
            async for message in ws:
                if isinstance(message, str):  # the relay speaks bytes only
                    break
                reader.feed_data(message)
        except Exception:  # closed abruptly: the reader sees a truncated stream
            pass
        finally:
            reader.feed_eof()

    return reader, asyncio.create_task(pump())


def extra_of(ws: Any) -> dict[str, Any]:
    transport = getattr(ws, "transport", None)
    get = transport.get_extra_info if transport is not None else (lambda _n, d=None: d)
    return {"peername": get("peername"), "ssl_object": get("ssl_object")}
