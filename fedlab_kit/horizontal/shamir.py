"""Shamir secret sharing of 32-byte secrets over the prime field GF(2^521 - 1).

:func:`split` gives party ``i`` (1-based x coordinate) the value at ``x = i`` of a random
polynomial of degree ``threshold - 1`` whose constant term is the secret; any ``threshold``
shares give it back (:func:`combine`, Lagrange at 0), fewer are independent of it.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from ..errors import ProtocolError

P = (1 << 521) - 1  # a Mersenne prime above every 32-byte secret
SHARE_BYTES = 66


def split(secret: bytes, threshold: int, xs: list[int]) -> dict[int, bytes]:
    """Shares of ``secret`` (at most 64 bytes) for the x coordinates ``xs`` (distinct, >= 1)."""
    if not 1 <= threshold <= len(xs) or len(set(xs)) != len(xs) or min(xs) < 1:
        raise ValueError("shamir: need 1 <= threshold <= len(xs) distinct x >= 1")
    coeffs = [int.from_bytes(secret, "big")] + [secrets.randbelow(P) for _ in range(threshold - 1)]
    out = {}
    for x in xs:
        y = 0
        for c in reversed(coeffs):  # Horner
            y = (y * x + c) % P
        out[x] = y.to_bytes(SHARE_BYTES, "big")
    return out


def combine(shares: Mapping[int, bytes], threshold: int, size: int = 32) -> bytes:
    """The secret of ``size`` bytes from at least ``threshold`` shares (x -> share)."""
    if len(shares) < threshold:
        raise ProtocolError(f"shamir: {len(shares)} shares, {threshold} needed")
    pts = [(x, int.from_bytes(s, "big")) for x, s in list(shares.items())[:threshold]]
    if any(len(s) != SHARE_BYTES for s in shares.values()) or any(y >= P for _, y in pts):
        raise ProtocolError("shamir: a malformed share")
    secret = 0
    for i, (xi, yi) in enumerate(pts):
        num, den = 1, 1
        for j, (xj, _) in enumerate(pts):
            if i != j:
                num = num * (-xj) % P
                den = den * (xi - xj) % P
        secret = (secret + yi * num * pow(den, -1, P)) % P
    if secret >= 1 << (8 * size):
        raise ProtocolError("shamir: the shares do not fit together")
    return secret.to_bytes(size, "big")
