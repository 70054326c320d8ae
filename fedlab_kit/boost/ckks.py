"""The encrypted SecureBoost backend: gradients under CKKS, histograms folded and packed.

Layout (see ``../shared/DESIGN.md``): the label holder packs each row's gradient pair as one
complex slot value ``g + i*h`` and replicates it over ``width`` slots; the rows of each
requested node go in their own ciphertexts (node-sorted), so a node's histogram touches only
its own ciphertexts. A feature holder lays its candidate (feature, threshold) columns that exist
side by side, ``width`` to a mask (slot ``j`` of a row is 1 when the row's code of column j's
feature is at most its threshold; thresholds are in the feature holder's shuffled order, and
features with few distinct values take few slots), multiplies once per ciphertext, adds the
products over the node's ciphertexts, rescales and folds the rows together with
``log2(4096 / width)`` rotations: every row of the result then holds the same ``width``
cumulative sums (unused columns are zero), so nothing but those sums can be decrypted. Each
result is re-randomised with a fresh encryption of zero and sent back (depth 1: two data
primes, ~100 KB per result). The label holder learns exactly the cumulative (G, H) sums it
asked for; the feature holder sees only ciphertexts. Gradients are scaled so that every sum
stays inside the CKKS range, and unscaled after decryption.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
import numpy as np
import tenseal.sealapi as seal

from ..errors import ProtocolError
from ..he import PublicContext, RowLayout, SecretContext
from ..he.ckks import SLOTS
from ..he.grouped import zero_product
from .binning import MISSING

WIDTH = 64  # slots per row: 64 candidate (feature, threshold) columns per mask
MIN_WIDTH = 2
SUM_BOUND = 2.0**17


class _Grads(msgspec.Struct, array_like=True):
    width: int
    sizes: list[int]
    cts: bytes


class _Hists(msgspec.Struct, array_like=True):
    width: int
    n_results: int
    columns: bytes  # int32 (feature, slot) of each packed column, in order
    cts: bytes


def _steps() -> list[int]:
    """Rotation keys for every power-of-two fold, so any layout width works."""
    steps, s = [], MIN_WIDTH
    while s < SLOTS:
        steps.append(s)
        s *= 2
    return steps


class CkksActive:
    """Label holder: owns the secret key; encrypts gradients, decrypts packed histograms."""

    tolerance = 1e-5  # absolute error bound of decrypted sums (measured ~1e-6 at 30k rows)

    def __init__(self, width: int = WIDTH) -> None:
        self.width = width
        self.secret = SecretContext(depth=1, rotations=_steps())
        self._scale = 1.0

    def __getstate__(self) -> dict[str, Any]:  # to a local worker process: keys as bytes
        raise TypeError("the CKKS secret context stays in the label holder's process")

    def setup_payload(self) -> bytes:
        return self.secret.to_bytes()

    def encrypt_nodes(self, g: np.ndarray, h: np.ndarray, nodes: list[np.ndarray]) -> bytes:
        vectors: list[np.ndarray] = []
        every = np.concatenate(nodes) if nodes else np.zeros(0, np.int64)
        # keep every sum well inside CKKS's range (|x| < 2**19 at the last level)
        total = max(float(np.abs(g[every]).sum()), float(np.abs(h[every]).sum()), 1e-300)
        self._scale = min(1.0, SUM_BOUND / total)
        g, h = g * self._scale, h * self._scale
        for rows in nodes:
            if len(rows) == 0:
                continue
            layout = RowLayout(len(rows), self.width)
            values = np.repeat((g[rows] + 1j * h[rows])[:, None], self.width, axis=1)
            vectors.extend(layout.place(values))
        return msgspec.msgpack.encode(
            _Grads(self.width, [len(r) for r in nodes], self.secret.encrypt_dump(vectors)))

    def decrypt_histograms(self, payload: bytes, n_nodes: int, n_features: int,
                           n_slots: int) -> np.ndarray:
        try:
            msg = msgspec.msgpack.decode(payload, type=_Hists)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProtocolError("malformed encrypted histograms from a feature holder") from exc
        cols = np.frombuffer(msg.columns, dtype="<i4").reshape(-1, 2) \
            if len(msg.columns) % 8 == 0 else np.zeros((0, 2), np.int32)
        if len(cols) * 8 != len(msg.columns) or (len(cols) and (
                cols[:, 0].min() < 0 or cols[:, 0].max() >= n_features
                or cols[:, 1].min() < 0 or cols[:, 1].max() >= n_slots)):
            raise ProtocolError("encrypted histograms name columns outside the histogram")
        groups = -(-len(cols) // msg.width)
        if msg.n_results != n_nodes * groups:
            raise ProtocolError(f"expected {n_nodes * groups} histogram groups, got "
                                f"{msg.n_results}")
        cts = self.secret.load(msg.cts, expect=msg.n_results)
        res = np.stack([self.secret.decrypt(ct, complex_values=True)[: msg.width] for ct in cts]
                       ) if cts else np.zeros((0, msg.width), complex)
        res = res.reshape(n_nodes, groups * msg.width)[:, : len(cols)] / self._scale
        out = np.zeros((n_nodes, n_features, n_slots, 2))
        out[:, cols[:, 0], cols[:, 1], 0] = res.real
        out[:, cols[:, 0], cols[:, 1], 1] = res.imag
        return out


_CONTEXTS: dict[str, PublicContext] = {}


class CkksPassive:
    """Feature holder: computes encrypted cumulative histograms; never holds a secret key."""

    def __init__(self, setup_payload: bytes) -> None:
        self._setup = bytes(setup_payload)
        self.ctx = self._context(self._setup)

    @staticmethod
    def _context(setup: bytes) -> PublicContext:
        key = hashlib.sha256(setup).hexdigest()
        if key not in _CONTEXTS:
            _CONTEXTS.clear()
            _CONTEXTS[key] = PublicContext.from_bytes(setup)
        return _CONTEXTS[key]

    def __getstate__(self) -> dict[str, Any]:
        return {"setup": self._setup}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._setup = state["setup"]
        self.ctx = self._context(self._setup)

    def histograms(self, payload: bytes, nodes: list[np.ndarray], codes: np.ndarray,
                   thresholds: np.ndarray) -> bytes:
        try:
            msg = msgspec.msgpack.decode(payload, type=_Grads)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProtocolError("malformed encrypted gradients from the label holder") from exc
        if msg.sizes != [len(r) for r in nodes]:
            raise ProtocolError("encrypted gradients do not match the requested nodes")
        width = msg.width
        if width > SLOTS or width < MIN_WIDTH or width & (width - 1):
            raise ProtocolError(f"invalid layout width {width}")
        layouts = [RowLayout(n, width) if n else None for n in msg.sizes]
        cts = self.ctx.load(msg.cts, expect=sum(lay.n_cts for lay in layouts if lay))
        # only candidate slots that exist are computed, packed ``width`` to a mask
        cols = np.argwhere(thresholds >= 0).astype("<i4")  # (feature, slot) pairs
        groups = [cols[a:a + width] for a in range(0, len(cols), width)]
        results: list[seal.Ciphertext | None] = []
        start = 0
        for rows, lay in zip(nodes, layouts, strict=True):
            node_cts = cts[start:start + lay.n_cts] if lay else []
            start += lay.n_cts if lay else 0
            for group in groups:
                results.append(self._group_sum(node_cts, lay, codes[rows], thresholds, group)
                               if lay else None)
        for res in results:
            if res is not None:
                self.ctx.rerandomise(res)
        zero = None
        out = []
        for res in results:  # an empty node's sums are zero
            if res is None:
                zero = zero or self.ctx.encrypt(np.zeros(SLOTS))
                res = zero
            out.append(res)
        return msgspec.msgpack.encode(_Hists(width, len(results), cols.tobytes(),
                                             self.ctx.dump(out)))

    def _group_sum(self, cts: list[seal.Ciphertext], layout: RowLayout, codes: np.ndarray,
                   thresholds: np.ndarray, group: np.ndarray) -> seal.Ciphertext:
        feats, slots = group[:, 0], group[:, 1]
        c = codes[:, feats].astype(np.int32)  # (rows, columns)
        thr = thresholds[feats, slots].astype(np.int32)
        mask = np.zeros((layout.n_rows, layout.width))
        mask[:, : len(group)] = (c <= thr[None, :]) & (c != MISSING)
        ev, acc, tmp = self.ctx.evaluator, None, seal.Ciphertext()
        for ct, vec in zip(cts, layout.place(mask), strict=True):
            if not vec.any():
                continue
            ev.multiply_plain(ct, self.ctx.encode(vec, like=ct), tmp)
            if acc is None:
                acc, tmp = tmp, seal.Ciphertext()
            else:
                ev.add_inplace(acc, tmp)
        if acc is None:
            return zero_product(self.ctx, cts[0])
        ev.rescale_to_next_inplace(acc)
        self.ctx.rotate_sum(acc, layout.fold_steps)
        return acc
