"""End-to-end sealing of frames between two parties (AES-256-GCM, keys from X25519).

Each direction (A -> B and B -> A) has its own key, derived with HKDF-SHA256 from the static
X25519 agreement of the two pinned identities, the room name and both party names. Every
frame gets a fresh random 96-bit nonce. The header travels inside the ciphertext, so the
relay sees only the recipient's name, sizes and timing.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import ProtocolError, SecurityError
from .frames import FrameHeader, decode_header, encode_header
from .identity import Identity, PartyCard

NONCE = 12
TAG = 16
_HLEN = struct.Struct(">I")
OVERHEAD = NONCE + TAG + _HLEN.size + 512  # upper bound on sealing overhead per frame


def _direction_key(shared: bytes, room: str, sender: str, recipient: str) -> AESGCM:
    info = f"fedlab-e2e1|{room}|{sender}|{recipient}".encode()
    key = HKDF(hashes.SHA256(), 32, salt=b"fedlab-kit", info=info).derive(shared)
    return AESGCM(key)


class PeerSealer:
    """Seals frames to one peer and opens frames from it."""

    def __init__(self, identity: Identity, peer: PartyCard, room: str) -> None:
        shared = identity.agree(peer)
        self.peer = peer.name
        self._aad_out = f"{room}|{identity.name}|{peer.name}".encode()
        self._aad_in = f"{room}|{peer.name}|{identity.name}".encode()
        self._out = _direction_key(shared, room, identity.name, peer.name)
        self._in = _direction_key(shared, room, peer.name, identity.name)

    def seal(self, header: FrameHeader, data: bytes | memoryview = b"") -> bytes:
        head = encode_header(header)
        plain = b"".join((_HLEN.pack(len(head)), head, data))
        nonce = os.urandom(NONCE)
        return nonce + self._out.encrypt(nonce, plain, self._aad_out)

    def open(self, body: bytes | memoryview) -> tuple[FrameHeader, memoryview]:
        if len(body) < NONCE + TAG + _HLEN.size:
            raise SecurityError(self.peer, f"frame of {len(body)} bytes is too short")
        body = memoryview(body)
        try:
            plain = self._in.decrypt(body[:NONCE], body[NONCE:], self._aad_in)
        except InvalidTag:
            raise SecurityError(
                self.peer, "authentication failed (tampered, or not sealed for us by this peer)"
            ) from None
        view = memoryview(plain)
        (hlen,) = _HLEN.unpack_from(view)
        if hlen > len(view) - _HLEN.size:
            raise SecurityError(self.peer, "header length field exceeds the frame")
        try:
            header = decode_header(view[_HLEN.size : _HLEN.size + hlen])
        except ProtocolError as exc:
            raise SecurityError(self.peer, str(exc)) from None
        return header, view[_HLEN.size + hlen :]
