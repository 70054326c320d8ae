"""The end-to-end frame header that carries a protocol's messages.

An application message (a :class:`~fedlab_kit.protocol.Envelope`) travels as one or more
*frames*. Each frame is a :class:`FrameHeader` plus a slice of the payload, sealed end to end
(see :mod:`.sealing`).
Headers are msgpack (msgspec), payloads raw bytes: nothing on the wire is ever pickled.
"""

from __future__ import annotations

from enum import IntEnum

import msgspec

from ..errors import ProtocolError


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
