"""The typed envelope a protocol sees, and the end-to-end frame header that carries it.

An application message (an :class:`Envelope`) travels as one or more *frames*. Each frame is
a :class:`FrameHeader` plus a slice of the payload, sealed end to end (see :mod:`.sealing`).
Headers are msgpack (msgspec), payloads raw bytes: nothing on the wire is ever pickled.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import msgspec

from .errors import ProtocolError


class FrameType(IntEnum):
    DATA = 0  # a chunk of an application message
    ACK = 1  # receiver -> sender: everything before cursor arrived
    RESUME = 2  # receiver -> sender: (re)start sending from cursor, tagged with a new epoch


class FrameHeader(msgspec.Struct, array_like=True, frozen=True):
    """Authenticated header of one end-to-end frame (encrypted together with its data).

    ``instance`` is the sending process's random incarnation id; ``peer_instance`` the
    recipient incarnation the frame is meant for (empty if unknown). ``epoch`` counts the
    recipient's resume requests, so frames sent before a resume are recognised as stale.
    ``cursor_msg``/``cursor_chunk`` (ACK, RESUME) point at the next frame the receiver wants;
    ``cursor_msg == -1`` means "from your oldest unacknowledged message".
    """

    type: FrameType
    sender: str
    recipient: str
    instance: bytes
    peer_instance: bytes
    epoch: int
    msg: int = 0
    chunk: int = 0
    n_chunks: int = 0
    total: int = 0
    session: str = ""
    kind: str = ""
    cursor_msg: int = -1
    cursor_chunk: int = 0
    reply: bool = False


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(FrameHeader)


def encode_header(header: FrameHeader) -> bytes:
    return _encoder.encode(header)


def decode_header(data: bytes | memoryview) -> FrameHeader:
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(f"malformed frame header: {exc}") from exc


@dataclass(frozen=True)
class Envelope:
    """One application message as delivered to a protocol.

    ``seq`` is the sender's message sequence number towards this recipient (0, 1, 2, ...),
    ``payload`` the raw bytes (a ``bytearray`` for messages that were chunked).
    """

    sender: str
    recipient: str
    session: str
    kind: str
    seq: int
    payload: bytes | bytearray

    def __repr__(self) -> str:
        return (
            f"Envelope({self.sender}->{self.recipient} session={self.session!r} "
            f"kind={self.kind!r} seq={self.seq} {len(self.payload)} bytes)"
        )
