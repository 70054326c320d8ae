"""Base oblivious transfers for OT extension: the Bellare-Micali construction over the
prime-order subgroup of Ed25519 (libsodium, through PyNaCl), semi-honest, in the random
oracle model.

The OT *sender* (who ends with two seeds per transfer) takes a point ``C`` that nobody
knows the discrete log of (hashed onto the curve from the session tag) and sends
``A = r B``. The *receiver* with choice bit ``s_j`` draws ``k_j`` and sends
``P_j = k_j B`` if ``s_j = 0``, else ``C - k_j B``; it learns ``H(j, k_j A)``. The sender
derives ``H(j, r P_j)`` and ``H(j, r (C - P_j))``: one of them is the receiver's seed, the
other needs ``r C``, the Diffie-Hellman value of ``A`` and ``C`` (CDH). ``P_j`` is uniform
whatever ``s_j`` is, so the sender learns nothing of the choices.

Why not "simplest OT" (Chou-Orlandi 2015): its receiver message ``k B + s A`` depends on
the sender's own ``A``, and its published proof was found flawed (Genç, Iovino, Rial 2018;
Hauck and Loss 2017): the construction above needs only CDH and a random oracle.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
from nacl.bindings import (
    crypto_core_ed25519_from_uniform,
    crypto_core_ed25519_is_valid_point,
    crypto_core_ed25519_scalar_reduce,
    crypto_core_ed25519_sub,
    crypto_scalarmult_ed25519_base_noclamp,
    crypto_scalarmult_ed25519_noclamp,
)
from nacl.exceptions import RuntimeError as NaclRuntimeError

from ..errors import ProtocolError

POINT = 32
SEED = 16


def _scalar() -> bytes:
    return crypto_core_ed25519_scalar_reduce(os.urandom(64))


def _point(data: bytes, what: str) -> bytes:
    if len(data) != POINT or not crypto_core_ed25519_is_valid_point(data):
        raise ProtocolError(f"OT: {what} is not a point of the Ed25519 prime-order group")
    return data


def _mul(scalar: bytes, point: bytes) -> bytes:
    try:
        return crypto_scalarmult_ed25519_noclamp(scalar, point)
    except NaclRuntimeError:  # the identity: never from honest values
        raise ProtocolError("OT: a point multiplied to the identity") from None


def _seed(tag: bytes, j: int, point: bytes) -> bytes:
    return hashlib.blake2b(point, digest_size=SEED, key=tag[:64],
                           person=b"fedlab-baseot", salt=j.to_bytes(16, "little")).digest()


def common_point(tag: bytes) -> bytes:
    """``C``: hashed onto the curve, so neither side knows its discrete log."""
    return crypto_core_ed25519_from_uniform(
        hashlib.blake2b(tag, digest_size=32, person=b"fedlab-baseot-C").digest())


class OtSender:
    """The side that ends with two seeds per transfer (the PSI receiver in KKRT)."""

    def __init__(self, tag: bytes) -> None:
        self.tag = tag
        self._r = _scalar()
        self.first = crypto_scalarmult_ed25519_base_noclamp(self._r)  # A, sent

    def seeds(self, answer: bytes, n: int) -> tuple[list[bytes], list[bytes]]:
        """Both seeds of each of the ``n`` transfers, from the receiver's points."""
        if len(answer) != n * POINT:
            raise ProtocolError(f"OT: {len(answer)} bytes of answer for {n} transfers")
        rc = _mul(self._r, common_point(self.tag))
        zero, one = [], []
        for j in range(n):
            rp = _mul(self._r, _point(answer[j * POINT:(j + 1) * POINT], f"answer {j}"))
            zero.append(_seed(self.tag, j, rp))
            one.append(_seed(self.tag, j, crypto_core_ed25519_sub(rc, rp)))  # r (C - P_j)
        return zero, one


class OtReceiver:
    """The side that picks one seed per transfer (the PSI sender in KKRT)."""

    def __init__(self, tag: bytes, choices: np.ndarray) -> None:
        self.tag = tag
        self.choices = np.asarray(choices, np.uint8)
        c = common_point(tag)
        self._k = [_scalar() for _ in self.choices]
        points = []
        for k, s in zip(self._k, self.choices, strict=True):
            kb = crypto_scalarmult_ed25519_base_noclamp(k)
            points.append(crypto_core_ed25519_sub(c, kb) if s else kb)
        self.answer = b"".join(points)  # sent

    def seeds(self, first: bytes) -> list[bytes]:
        """The chosen seed of each transfer, from the sender's ``A``."""
        a = _point(first, "the sender's first message")
        return [_seed(self.tag, j, _mul(k, a)) for j, k in enumerate(self._k)]
