"""Fixed point in the ring of integers mod 2^64, and the masks of secure aggregation.

A vector travels as ``round(v * 2^bits) mod 2^64`` (uint64); sums of up to ``n`` such vectors
decode exactly while ``n * bound * 2^bits < 2^63`` (checked by :func:`check_range`). A mask
is the AES-256-CTR key stream of a 32-byte seed read as uint64 (a PRG: without the seed it is
uniform mod 2^64, so a masked vector is too). Round ``r``'s seeds are derived from a run's
long-term seeds with SHAKE-256, so revealing one round's seed reveals no other round's.
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import HorizontalError

RING_BITS = 64


def prg(seed: bytes, n: int) -> np.ndarray:
    """``n`` pseudorandom uint64 values from a 32-byte seed."""
    enc = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    return np.frombuffer(enc.update(bytes(8 * n)) + enc.finalize(), dtype="<u8").astype(
        np.uint64, copy=False)


def derive(seed: bytes, *labels: bytes | str | int) -> bytes:
    """A 32-byte seed for ``labels`` (e.g. a round) from a long-term seed."""
    h = hashlib.shake_256(b"fedlab-secagg|" + seed)
    for lab in labels:
        raw = lab.encode() if isinstance(lab, str) else (
            lab.to_bytes(8, "big") if isinstance(lab, int) else lab)
        h.update(len(raw).to_bytes(4, "big") + raw)
    return h.digest(32)


def check_range(bound: float, bits: int, n_parties: int) -> None:
    """Refuse a fixed-point encoding whose sum over ``n_parties`` could wrap around."""
    if not (bound > 0 and 0 <= bits <= 62) or n_parties * bound * 2.0 ** bits >= 2.0 ** 63:
        raise HorizontalError(f"secure aggregation: {n_parties} parties x |value| <= {bound} "
                              f"x 2^{bits} does not fit in 63 bits")


def encode(values: np.ndarray, bits: int, bound: float, what: str) -> np.ndarray:
    """``round(v * 2^bits)`` mod 2^64; a value beyond ``+-bound`` (or not finite) is an error
    naming ``what``."""
    v = np.asarray(values, dtype=np.float64).ravel()
    bad = ~np.isfinite(v) | (np.abs(v) > bound)
    if bad.any():
        raise HorizontalError(f"{what}: {int(bad.sum())} values are not finite or beyond "
                              f"+-{bound} (e.g. {v[bad][0]!r})")
    return np.rint(v * float(1 << bits)).astype(np.int64).view(np.uint64)


def decode(total: np.ndarray, bits: int) -> np.ndarray:
    """The signed sum (float) of :func:`encode` values."""
    return total.view(np.int64).astype(np.float64) / float(1 << bits)
