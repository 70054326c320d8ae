"""The typed envelope a protocol receives: who sent what, in which session."""

from __future__ import annotations

from dataclasses import dataclass


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
