"""Wire format between a party and the relay (not end to end: see :mod:`fedlab_kit.net.sealing`).

Every frame is ``u32 length | u8 type | body`` where ``length`` counts type and body.
Control frames carry msgspec-validated JSON; SEND and DELIVER carry an opaque sealed body
that the relay never decodes. All decoding is strict: a bad length, an unknown type or a
body that does not validate raises :class:`WireError`.
"""

from __future__ import annotations

import asyncio
import struct
from enum import IntEnum
from typing import TypeVar

import msgspec

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME = 16 << 20
_HEAD = struct.Struct(">IB")
_SEQ = struct.Struct(">Q")
HEAD_SIZE = _HEAD.size


class WireError(Exception):
    """A frame violates the wire format."""


class T(IntEnum):
    CHALLENGE = 1
    HELLO = 2
    WELCOME = 3
    ERROR = 4
    SEND = 5
    DELIVER = 6
    ACK = 7
    PRESENCE = 8
    PING = 9
    PONG = 10
    BYE = 11  # party -> relay: leaving on purpose


class Challenge(msgspec.Struct):
    version: int
    nonce: bytes
    epoch: str
    max_frame: int


class Hello(msgspec.Struct):
    version: int
    room: str
    name: str
    roster: dict[str, bytes]  # member name -> Ed25519 public key
    signature: bytes  # over auth_message(nonce, room, name, roster)
    instance: bytes = b""  # random id of the party process (a reconnect keeps it)
    epoch: str = ""  # relay epoch the client last saw ("" on first connect)
    last_seq: int = 0  # highest DELIVER seq received in that epoch
    grant: str = ""  # the organiser's RoomGrant (text), for a relay that needs one


class Welcome(msgspec.Struct):
    epoch: str  # of the room (a new one when the relay restarts or reopens the room)
    present: list[str]
    max_frame: int
    mailbox_bytes: int = 128 << 20  # parties keep their send windows well below this


class Error(msgspec.Struct):
    code: str
    message: str
    fatal: bool = True


class Presence(msgspec.Struct):
    party: str
    event: str  # "joined" | "left" | "lost"


S = TypeVar("S", bound=msgspec.Struct)
_json = msgspec.json.Encoder()


def auth_message(nonce: bytes, room: str, name: str, roster: dict[str, bytes]) -> bytes:
    """The bytes a party signs to prove its identity to the relay."""
    members = ";".join(f"{k}={v.hex()}" for k, v in sorted(roster.items()))
    return b"fedlab-relay-auth1|" + nonce + f"|{room}|{name}|{members}".encode()


def frame(kind: T, body: bytes = b"") -> bytes:
    return _HEAD.pack(len(body) + 1, kind) + body


def control(kind: T, msg: msgspec.Struct) -> bytes:
    return frame(kind, _json.encode(msg))


def decode_control(body: bytes, cls: type[S]) -> S:
    try:
        return msgspec.json.decode(body, type=cls)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise WireError(f"bad {cls.__name__} frame: {exc}") from None


def send_head(recipient: str, body_len: int) -> bytes:
    """Header of a SEND frame; the sealed body follows it on the wire."""
    name = recipient.encode()
    return _HEAD.pack(2 + len(name) + body_len, T.SEND) + bytes([len(name)]) + name


def parse_send(body: bytes | memoryview) -> tuple[str, memoryview]:
    view = memoryview(body)
    if not view:
        raise WireError("empty SEND frame")
    n = view[0]
    if len(view) < 1 + n or n == 0:
        raise WireError("SEND frame shorter than its recipient name")
    try:
        name = bytes(view[1 : 1 + n]).decode()
    except UnicodeDecodeError:
        raise WireError("SEND recipient is not UTF-8") from None
    return name, view[1 + n :]


def deliver_head(seq: int, sender: str, body_len: int) -> bytes:
    name = sender.encode()
    return (
        _HEAD.pack(1 + _SEQ.size + 1 + len(name) + body_len, T.DELIVER)
        + _SEQ.pack(seq)
        + bytes([len(name)])
        + name
    )


def parse_deliver(body: bytes | memoryview) -> tuple[int, str, memoryview]:
    view = memoryview(body)
    if len(view) < _SEQ.size + 1:
        raise WireError("DELIVER frame too short")
    (seq,) = _SEQ.unpack_from(view)
    n = view[_SEQ.size]
    start = _SEQ.size + 1
    if len(view) < start + n:
        raise WireError("DELIVER frame shorter than its sender name")
    return seq, bytes(view[start : start + n]).decode(errors="replace"), view[start + n :]


def ack(seq: int) -> bytes:
    return frame(T.ACK, _SEQ.pack(seq))


def parse_ack(body: bytes | memoryview) -> int:
    if len(body) != _SEQ.size:
        raise WireError(f"ACK frame must be {_SEQ.size} bytes, got {len(body)}")
    return _SEQ.unpack(body)[0]


def parse_head(head: bytes, max_frame: int) -> tuple[int, T]:
    """Validate a frame header; returns (body length, type)."""
    length, kind = _HEAD.unpack(head)
    if length < 1:
        raise WireError("frame length 0")
    if length > max_frame + 1024:
        raise WireError(f"frame of {length} bytes exceeds the limit of {max_frame}")
    try:
        return length - 1, T(kind)
    except ValueError:
        raise WireError(f"unknown frame type {kind}") from None


async def read_frame(reader: asyncio.StreamReader, max_frame: int) -> tuple[T, bytes]:
    """Read one frame; raises IncompleteReadError at EOF and WireError on bad input."""
    size, kind = parse_head(await reader.readexactly(HEAD_SIZE), max_frame)
    return kind, await reader.readexactly(size)


class FrameDecoder:
    """Sans-IO incremental decoder: feed bytes, get complete frames."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[T, bytes]]:
        self._buf += data
        out: list[tuple[T, bytes]] = []
        while len(self._buf) >= HEAD_SIZE:
            size, kind = parse_head(bytes(self._buf[:HEAD_SIZE]), self.max_frame)
            if len(self._buf) < HEAD_SIZE + size:
                break
            out.append((kind, bytes(self._buf[HEAD_SIZE : HEAD_SIZE + size])))
            del self._buf[: HEAD_SIZE + size]
        return out
