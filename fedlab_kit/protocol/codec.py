"""One wire format for every protocol: a message kind names a msgspec Struct.

A payload is ``[4-byte length][msgpack of the Struct][raw bytes]``: the raw tail carries
big arrays (points, ciphertexts) without a copy into msgpack. Nothing is ever pickled.
:meth:`Codec.decode` turns a peer's malformed or unexpected message into a
:class:`~fedlab_kit.errors.ProtocolError` that names the sender and the kind.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

import msgspec

from ..errors import InternalError, ProtocolError
from .core import Send
from .envelope import Envelope

_LEN = struct.Struct(">I")
_encoder = msgspec.msgpack.Encoder()


class Codec:
    """The message kinds of one protocol family (``family/kind`` on the wire)."""

    def __init__(self, family: str, kinds: dict[str, type[msgspec.Struct]]) -> None:
        self.family = family
        self._types = {f"{family}/{k}": t for k, t in kinds.items()}
        self._kinds = {t: k for k, t in self._types.items()}
        if len(self._kinds) != len(self._types):
            raise InternalError(f"{family}: one Struct type per message kind")
        self._decoders = {k: msgspec.msgpack.Decoder(t) for k, t in self._types.items()}

    def kind(self, msg: msgspec.Struct | type[msgspec.Struct]) -> str:
        cls = msg if isinstance(msg, type) else type(msg)
        try:
            return self._kinds[cls]
        except KeyError:
            raise InternalError(f"{self.family}: {cls.__name__} is not one of its "
                                "messages") from None

    def encode(self, msg: msgspec.Struct, data: bytes | bytearray | memoryview = b"") -> bytes:
        self.kind(msg)
        head = _encoder.encode(msg)
        return b"".join((_LEN.pack(len(head)), head, data))

    def send(self, to: str, msg: msgspec.Struct,
             data: bytes | bytearray | memoryview = b"") -> Send:
        return Send(to, self.kind(msg), self.encode(msg, data))

    def broadcast(self, peers: Iterable[str], msg: msgspec.Struct,
                  data: bytes | bytearray | memoryview = b"") -> list[Send]:
        payload, kind = self.encode(msg, data), self.kind(msg)
        return [Send(p, kind, payload) for p in peers]

    def decode(self, env: Envelope, expect: Any = None) -> Any:
        """The message in ``env``; with ``expect`` (a type or tuple of types) anything else
        is a :class:`ProtocolError`. The raw tail is :meth:`decode_with_data`'s."""
        return self.decode_with_data(env, expect)[0]

    def decode_with_data(self, env: Envelope, expect: Any = None) -> tuple[Any, memoryview]:
        decoder = self._decoders.get(env.kind)
        if decoder is None or (expect is not None and not issubclass(self._types[env.kind],
                                                                     expect)):
            raise ProtocolError(f"{self.family}: unexpected message {env.kind!r} from "
                                f"{env.sender!r}{_wanted(expect, self)}")
        view = memoryview(env.payload)
        try:
            (n,) = _LEN.unpack_from(view)
            if 4 + n > len(view):
                raise msgspec.DecodeError("header longer than the message")
            return decoder.decode(view[4:4 + n]), view[4 + n:]
        except (struct.error, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProtocolError(f"{self.family}: malformed {env.kind!r} from {env.sender!r}: "
                                f"{exc}") from None


def _wanted(expect: Any, codec: Codec) -> str:
    if expect is None:
        return ""
    types = expect if isinstance(expect, tuple) else (expect,)
    return " (expected " + " or ".join(repr(codec.kind(t)) for t in types) + ")"
