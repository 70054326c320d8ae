"""Curve25519 work for ECDH-PSI: hashing IDs to points and X25519 scalar multiplication.

A point is a 32-byte X25519 u-coordinate; batches are concatenations of points, and
``X25519(a, X25519(b, P)) == X25519(b, X25519(a, P))``, which is what ECDH-PSI needs.

IDs are hashed onto the curve itself with Elligator 2 (RFC 9380's ``map_to_curve_elligator2``
for curve25519, Z = 2) of a SHA-512 hash reduced mod p. Raw hash bytes used as a
u-coordinate land on the curve or on its twist half the time each, and that bit survives
every scalar multiplication, so each relayed element would leak one bit of its hash.
These functions run in worker processes: keep this module's imports light.
"""

from __future__ import annotations

import hashlib
import os

import gmpy2
from nacl.bindings import crypto_scalarmult
from nacl.exceptions import RuntimeError as NaclRuntimeError

from ..errors import InputError, ProtocolError

try:  # PyNaCl's own cffi handle on libsodium: one call per point, no per-call allocation
    from nacl._sodium import ffi as _ffi
    from nacl._sodium import lib as _lib
except ImportError:  # pragma: no cover - other PyNaCl layouts use the public binding
    _ffi = _lib = None

POINT = 32
TAG_PREFIX = b"fedlab-psi2|"
_P = gmpy2.mpz(2**255 - 19)
_A = gmpy2.mpz(486662)


class InvalidPoint(ProtocolError):
    """A batch holds a point that maps to the identity (low order): never from honest peers.

    Only a peer's points can be of low order (our own are hashes of IDs), so this is a
    :class:`~fedlab_kit.errors.ProtocolError`.
    """

    def __init__(self, index: int) -> None:
        super().__init__(f"point {index} of the batch is of low order (all-zero result)")
        self.index = index

    def __reduce__(self) -> tuple[type[InvalidPoint], tuple[int]]:
        # raised in worker processes: rebuild from the index, not from the message
        return InvalidPoint, (self.index,)


def new_scalar() -> bytes:
    """A fresh secret X25519 scalar for one PSI session."""
    return os.urandom(32)


def hash_id(tag: bytes, key: bytes) -> bytes:
    """Domain-separated hash of one encoded ID to a point on the curve."""
    return elligator2(hashlib.sha512(TAG_PREFIX + tag + b"|" + key).digest())


def elligator2(digest: bytes) -> bytes:
    """The u-coordinate (32 bytes, little-endian) of the curve point that Elligator 2 maps
    ``digest`` (read as an integer mod p) to: always on Curve25519, never on its twist."""
    p, a = _P, _A
    r = gmpy2.mpz(int.from_bytes(digest, "little")) % p
    tv = 2 * r * r % p
    if tv == p - 1:  # 1 + 2 r^2 = 0: RFC 9380 maps it as r = 0
        tv = gmpy2.mpz(0)
    x1 = -a * gmpy2.invert(1 + tv, p) % p
    gx1 = x1 * (x1 * (x1 + a) + 1) % p
    x = x1 if gmpy2.jacobi(gx1, p) >= 0 else (-x1 - a) % p
    return int(x).to_bytes(POINT, "little")


def on_curve(point: bytes) -> bool:
    """Whether a u-coordinate is on Curve25519 (True) or on its twist (False)."""
    u = gmpy2.mpz(int.from_bytes(point, "little") & ((1 << 255) - 1)) % _P
    return gmpy2.jacobi(u * (u * (u + _A) + 1) % _P, _P) >= 0


def mul_points(scalar: bytes, points: bytes) -> bytes:
    """Multiply every point of a batch by ``scalar``; raises :class:`InvalidPoint`."""
    if len(points) % POINT:
        raise InputError(f"batch of {len(points)} bytes is not a whole number of points")
    if len(scalar) != 32:
        raise InputError("an X25519 scalar is 32 bytes")
    if _lib is not None:
        return _mul_points_cffi(scalar, points)
    return _mul_points_binding(scalar, points)


def _mul_points_cffi(scalar: bytes, points: bytes) -> bytes:
    out = _ffi.new("unsigned char[]", len(points))
    src = _ffi.from_buffer(points)
    mult = _lib.crypto_scalarmult
    for i in range(0, len(points), POINT):
        if mult(out + i, scalar, src + i) != 0:
            raise InvalidPoint(i // POINT)
    return bytes(_ffi.buffer(out))


def _mul_points_binding(scalar: bytes, points: bytes) -> bytes:
    out = bytearray(len(points))
    for i in range(0, len(points), POINT):
        try:
            out[i : i + POINT] = crypto_scalarmult(scalar, points[i : i + POINT])
        except NaclRuntimeError:
            raise InvalidPoint(i // POINT) from None
    return bytes(out)


def hash_and_mul(scalar: bytes, tag: bytes, keys: list[bytes]) -> bytes:
    """Hash each encoded ID to a point and multiply by ``scalar`` (the owner's first step)."""
    return mul_points(scalar, b"".join([hash_id(tag, key) for key in keys]))
