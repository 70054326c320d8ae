"""Fixed-point encoding, local standardisation and pairwise zero-sum masks.

Every party standardises its own columns on its training rows (mean 0, standard deviation
1, clipped to ``+-X_CLIP``) and encodes them as integers ``round(x * 2^X_BITS)``; per-row
contributions are encoded as ``round(c * 2^C_BITS)`` within ``+-C_CLIP``. With these bounds
an inner product of up to :data:`MAX_ROWS` rows stays below 2^51 in absolute value, which is
what :data:`~fedlab_kit.he.bfv.INNER` decrypts exactly, so encrypted and plaintext runs add
up the very same integers.

Zero-sum masks (:func:`zero_sum_mask`): parties ``i < j`` share a 32-byte seed; for a label
``L`` and a set ``S`` of parties, party ``i`` in ``S`` adds ``sum_{j in S, j != i} +-PRG(seed_ij,
L)`` (+ when ``i < j``) to what it sends, so the masks cancel in the sum over ``S`` and, with
two or more other members, any one message is uniform to its recipient (the PRG is
SHAKE-256).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import numpy as np

from ..errors import ProtocolError
from ..he.inner import Layout, T
from .errors import LinearError

X_BITS, X_CLIP = 10, 16.0
C_BITS, C_CLIP = 12, 64.0
X_BOUND = int(X_CLIP) << X_BITS
C_BOUND = int(C_CLIP) << C_BITS
MAX_ROWS = Layout.max_rows(X_BOUND, C_BOUND)
#: scalars (norms, inner products of gradient blocks) travel as round(v * 2^64) mod 2^128
SCALAR_BITS, SCALAR_MOD = 64, 1 << 128


def quantize(values: np.ndarray, bits: int, clip: float) -> np.ndarray:
    """``round(clip(v) * 2^bits)`` as int64."""
    return np.rint(np.clip(values, -clip, clip) * float(1 << bits)).astype(np.int64)


def centered(values: np.ndarray, modulus: int = T) -> np.ndarray:
    """Residues mod ``modulus`` (< 2^63) as signed int64 in ``[-modulus/2, modulus/2)``."""
    v = np.asarray(values, dtype=np.uint64) % np.uint64(modulus)
    out = v.astype(np.int64)
    out[v >= np.uint64(modulus // 2)] -= np.int64(modulus)
    return out


def standardise(X: np.ndarray, columns: list[str], what: str
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation; a constant column is an error naming it."""
    mean = X.mean(axis=0) if len(X) else np.zeros(X.shape[1])
    std = X.std(axis=0) if len(X) else np.zeros(X.shape[1])
    flat = [c for c, s, m in zip(columns, std, mean, strict=True)
            if not s > 1e-12 * max(1.0, abs(m))]
    if flat:
        raise LinearError(f"{what} has constant columns {flat[:5]} on the training rows: they "
                          "carry no information for a linear model; drop them")
    return mean, std


def scaled(X: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Standardised and clipped to ``+-X_CLIP`` (what the model sees)."""
    return np.clip((X - mean) / std, -X_CLIP, X_CLIP)


def _stream(seed: bytes, label: bytes, n_bytes: int) -> bytes:
    return hashlib.shake_256(seed + b"|" + label).digest(n_bytes)


def _signed_peers(me: str, members: Iterable[str]) -> list[tuple[str, int]]:
    return [(p, 1 if me < p else -1) for p in members if p != me]


def zero_sum_mask(me: str, members: Iterable[str], seeds: Mapping[str, bytes], label: bytes,
                  n: int, bits: int) -> np.ndarray:
    """This party's share (uint64, mod ``2^bits``, ``bits <= 64``) of ``n`` masks that cancel
    over ``members`` (``me`` among them)."""
    out = np.zeros(n, dtype=np.uint64)
    for peer, sign in _signed_peers(me, members):
        draw = np.frombuffer(_stream(seeds[peer], label, 8 * n), dtype="<u8").astype(np.uint64)
        out = out + draw if sign > 0 else out - draw  # wraps mod 2^64
    return out & np.uint64((1 << bits) - 1) if bits < 64 else out


def zero_sum_scalars(me: str, members: Iterable[str], seeds: Mapping[str, bytes],
                     label: bytes, n: int) -> list[int]:
    """As :func:`zero_sum_mask`, for a few scalars mod :data:`SCALAR_MOD`."""
    out = [0] * n
    for peer, sign in _signed_peers(me, members):
        raw = _stream(seeds[peer], label, 16 * n)
        for i in range(n):
            out[i] = (out[i] + sign * int.from_bytes(raw[16 * i:16 * i + 16], "little")) \
                % SCALAR_MOD
    return out


def encode_scalars(values: Iterable[float], mask: list[int]) -> list[bytes]:
    """Scalars as masked 16-byte integers (fixed point, 2^-64)."""
    out = []
    for v, m in zip(values, mask, strict=True):
        if not np.isfinite(v):
            raise LinearError("training diverged: a non-finite value in the optimiser; "
                              "check the input for extreme values")
        q = round(float(v) * 2.0 ** SCALAR_BITS) + m  # exact: a power-of-two scaling
        out.append((q % SCALAR_MOD).to_bytes(16, "little"))
    return out


def decode_scalar_sum(parts: Iterable[Iterable[bytes]], n: int) -> list[float]:
    """The sums over parties of :func:`encode_scalars` (masks cancelled)."""
    acc = [0] * n
    for part in parts:
        vals = list(part)
        if len(vals) != n or any(len(v) != 16 for v in vals):
            raise ProtocolError("logistic regression: a party sent a malformed scalar list")
        for i, v in enumerate(vals):
            acc[i] = (acc[i] + int.from_bytes(v, "little")) % SCALAR_MOD
    return [((a - SCALAR_MOD) if a >= SCALAR_MOD // 2 else a) / 2.0 ** SCALAR_BITS
            for a in acc]
