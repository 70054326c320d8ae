"""How contributions and inner products travel: encrypted (BFV, :mod:`fedlab_kit.he.inner`)
or, with ``insecure_plaintext=True``, in the clear. Both give the same integers.

A party's contribution ``c`` (one integer per row) goes to every other party; an evaluator
returns the masked inner products ``X^T c`` of its own columns, per *segment* of at most
:data:`~fedlab_kit.linear.fixed.MAX_ROWS` rows (each segment's sums stay exact); the
contributor decrypts them and sends the (still masked) values back.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np

from ..errors import ProtocolError
from ..he.inner import InnerEvaluator, InnerKey, Layout, load_ciphertexts, pack_columns
from .fixed import MAX_ROWS

PLAINTEXT_CACHE_BYTES = 512 << 20  # NTT plaintexts of own columns kept between rounds
_NTT_PLAINTEXT_BYTES = 3 * 8192 * 8


class InsecurePlaintextWarning(UserWarning):
    """Contributions and inner products are about to travel unencrypted."""


def segments(n_rows: int, layout: Layout) -> list[range]:
    """Block ranges whose rows one inner product may sum exactly."""
    per = max(1, MAX_ROWS // layout.block)
    n_blocks = layout.blocks(n_rows)
    return [range(s, min(s + per, n_blocks)) for s in range(0, n_blocks, per)]


def local_sums(X: np.ndarray, c: np.ndarray, layout: Layout) -> np.ndarray:
    """(segments, columns) int64: ``X^T c`` per segment, exactly (what both backends give)."""
    out = np.zeros((len(segments(len(c), layout)), X.shape[1]), dtype=np.int64)
    for i, seg in enumerate(segments(len(c), layout)):
        rows = slice(seg.start * layout.block, seg.stop * layout.block)
        out[i] = X[rows].T @ c[rows]
    return out


class Crypto:
    """One party's side of the inner products (its own key, its peers' public keys)."""

    secure = True

    def __init__(self) -> None:
        self.key = InnerKey()
        self.peers: dict[str, InnerEvaluator] = {}
        self._key_lock = threading.Lock()
        self._plains: dict[tuple[int, int], object] = {}

    def public_key(self) -> bytes:
        return self.key.public_bytes()

    def add_peer(self, peer: str, public_key: bytes) -> None:
        if not public_key:
            raise ProtocolError(f"logistic regression: {peer!r} sent no public key")
        self.peers[peer] = InnerEvaluator(public_key)

    def encrypt(self, c: np.ndarray, layout: Layout) -> bytes:
        with self._key_lock:
            return self.key.encrypt(c, layout)

    def products(self, peer: str, data: memoryview, X: np.ndarray, layout: Layout
                 ) -> tuple[bytes, np.ndarray]:
        """The masked inner products of ``X``'s columns with ``peer``'s contribution and the
        (segments, columns) masks to subtract from what comes back."""
        n_rows, n_cols = X.shape
        ev = self.peers[peer]
        cts = load_ciphertexts(data, layout.blocks(n_rows), fresh=True)
        segs, n_groups = segments(n_rows, layout), layout.groups(n_cols)
        cache = (len(segs) * n_groups * layout.blocks(n_rows)
                 * _NTT_PLAINTEXT_BYTES <= PLAINTEXT_CACHE_BYTES)
        plains = ([self._plain(ev, X, layout, g, b, cache) if b in seg else None
                   for b in range(len(cts))] for seg in segs for g in range(n_groups))
        payload, masks = ev.products(cts, plains)  # one result per (segment, group)
        at_targets = masks[:, layout.targets()].reshape(len(segs), n_groups * layout.width)
        return payload, at_targets[:, :n_cols]

    def _plain(self, ev: InnerEvaluator, X: np.ndarray, layout: Layout, g: int, b: int,
               cache: bool) -> object:
        if (g, b) in self._plains:
            return self._plains[(g, b)]
        block = X[b * layout.block:(b + 1) * layout.block,
                  g * layout.width:(g + 1) * layout.width]
        # an all-zero block (sparse one-hot columns) adds nothing, and SEAL refuses it
        pt = ev.plaintext(pack_columns(block, layout)) if block.any() else None
        if cache:
            self._plains[(g, b)] = pt
        return pt

    def decrypt(self, data: memoryview, layout: Layout, n_rows: int, n_cols: int
                ) -> np.ndarray:
        """(segments, n_cols) uint64 values mod 2^52 of a peer's products."""
        n_segs, n_groups = len(segments(n_rows, layout)), layout.groups(n_cols)
        with self._key_lock:
            got = self.key.decrypt(data, layout, n_segs * n_groups)
        return got.reshape(n_segs, n_groups * layout.width)[:, :n_cols]


class PlainCrypto(Crypto):
    """Everything in the clear (``insecure_plaintext=True``): tests and benchmarks."""

    secure = False

    def __init__(self) -> None:
        warnings.warn("insecure_plaintext=True: contributions and inner products travel "
                      "unencrypted; the other parties can read them", InsecurePlaintextWarning,
                      stacklevel=3)
        self.peers = {}

    def public_key(self) -> bytes:
        return b""

    def add_peer(self, peer: str, public_key: bytes) -> None:
        self.peers[peer] = None

    def encrypt(self, c: np.ndarray, layout: Layout) -> bytes:
        return np.ascontiguousarray(c, dtype="<i8").tobytes()

    def products(self, peer: str, data: memoryview, X: np.ndarray, layout: Layout
                 ) -> tuple[bytes, np.ndarray]:
        if len(data) != 8 * len(X):
            raise ProtocolError(f"logistic regression: {peer!r} sent {len(data)} bytes for "
                                f"{len(X)} rows")
        sums = local_sums(X, np.frombuffer(data, dtype="<i8"), layout)
        return sums.astype("<i8").tobytes(), np.zeros(sums.shape, dtype=np.uint64)

    def decrypt(self, data: memoryview, layout: Layout, n_rows: int, n_cols: int
                ) -> np.ndarray:
        n_segs = len(segments(n_rows, layout))
        if len(data) != 8 * n_segs * n_cols:
            raise ProtocolError("logistic regression: a peer's plaintext sums have the wrong "
                                "length")
        return np.frombuffer(data, dtype="<i8").reshape(n_segs, n_cols).astype(np.uint64)


def make_crypto(insecure_plaintext: bool) -> Crypto:
    return PlainCrypto() if insecure_plaintext else Crypto()
