"""The encrypted SecureBoost backend: fixed-point gradients under BFV, histograms flooded.

Layout: the label holder rounds each row's gradients to integers, ``g * S_g`` and
``h * S_h`` with powers of two ``S`` chosen per request so that every node sum stays well
inside the plain modulus (a 36-bit prime, ``fedlab_kit.he.bfv.HISTOGRAMS``), and lays each
row over ``width`` slots: G replicated over the first half, H over the second. The rows of
each requested node go in their own ciphertexts (node-sorted), so a node's histogram touches
only its own ciphertexts. A feature holder packs its candidate (feature, threshold) columns
``width / 2`` to a mask (slots ``j`` and ``width/2 + j`` of a row are 1 when the row's code of
column j's feature is at most its threshold and not missing; thresholds are in the feature
holder's shuffled order), multiplies once per ciphertext, adds the products over the node's
ciphertexts, drops one prime, folds the rows together (``log2(4096 / width)`` row rotations
and the column swap) and floods the result before it goes back: a fresh encryption of zero
plus uniform noise of 2^b on its first component (see :mod:`fedlab_kit.he.bfv`). Every row of
the result then holds the same exact integer sums, so the label holder decrypts exactly the
cumulative (G, H) sums it asked for, within statistical distance 2^-40 of a fresh encryption
of them; the feature holder sees only ciphertexts.

Rounding to integers is the only approximation: sums are off by at most half a unit per
row (``tolerance``), far below what decides a split.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import math
import os
from typing import Any

import msgspec
import numpy as np
import tenseal.sealapi as seal

from ..errors import ProtocolError
from ..he import RowLayout
from ..he.bfv import HISTOGRAMS, BfvPublic, BfvSecret, BfvSymmetric
from ..he.pool import balanced_chunks, keyed_pool, state
from ..he.serial import to_bytes
from .binning import MISSING

PARAMS = HISTOGRAMS
SLOTS = PARAMS.slots
WIDTH = 64  # slots per row when the column count is unknown: a mask answers 32 columns
MIN_WIDTH = 4
MAX_WIDTH = 128
#: every |sum| of scaled gradients stays below 2^34, a quarter of the plain modulus
SUM_LIMIT = 2.0**34
# measured costs (ms, sealapi, N=8192) that choose the width of a request: a ciphertext
# (encode + encrypt + save at the label holder; load + NTT at a feature holder), a result
# (back from NTT, prime dropped, flooded, saved, loaded, decrypted) and one fold rotation
CT_MS, RESULT_MS, ROTATION_MS = 11.2, 22.5, 5.3
#: memory (MB, all workers of a feature holder) for the encoded masks of the root, which
#: are the same in every tree without row subsampling; ``FEDLAB_MASK_CACHE_MB`` overrides
MASK_CACHE_MB = 1024
PLAINTEXT_BYTES = (len(PARAMS.coeff_bits) - 1) * SLOTS * 8  # an NTT mask at the data level


class _Grads(msgspec.Struct, array_like=True):
    width: int
    sizes: list[int]
    cts: bytes


class _Hists(msgspec.Struct, array_like=True):
    width: int
    n_results: int
    columns: bytes  # int32 (feature, slot) of each packed column, in order
    cts: bytes


def choose_width(sizes: list[int], columns: int) -> int:
    """The row width (slots per row) that minimises the cost of one histogram request.

    Mask work (rows x columns / 4096 plaintext encodings) does not depend on the width;
    what does: wider rows mean more ciphertexts to encrypt, send and load, narrower rows
    more results to fold (``log2(4096 / width) + 1`` rotations each) and decrypt.
    """
    busy = [n for n in sizes if n]
    if not busy or columns <= 0:
        return WIDTH
    best, best_cost = WIDTH, math.inf
    w = MIN_WIDTH
    while w <= MAX_WIDTH:
        cts = sum(-(-n * w // SLOTS) for n in busy)
        results = len(busy) * -(-columns // (w // 2))
        cost = cts * CT_MS + results * (RESULT_MS + ROTATION_MS
                                        * (math.log2(PARAMS.row // w) + 1))
        if cost < best_cost:
            best, best_cost = w, cost
        w *= 2
    return best


def _scale(values: np.ndarray, nodes: list[np.ndarray]) -> float:
    """The power of two that keeps the biggest node's sum of |values| below SUM_LIMIT."""
    biggest = max((float(np.abs(values[r]).sum()) for r in nodes), default=0.0)
    return 2.0 ** math.floor(math.log2(SUM_LIMIT / max(biggest, 1e-300)))


class BfvActive:
    """Label holder: owns the secret key; encrypts gradients, decrypts histograms.

    Encryption runs in a pool of this party's own worker processes (which get the secret
    key through the spawn pipe, never over the network)."""

    #: absolute error bound of the decrypted sums of the last request (rounding)
    tolerance = 1e-9

    def __init__(self, width: int | None = None, workers: Any = None) -> None:
        """``workers``: the party's :class:`~fedlab_kit.compute.Workers` (default: this
        machine's processes)."""
        self.width = width  # None: chosen per request (:func:`choose_width`)
        self.secret = BfvSecret(MIN_WIDTH, relin=False, params=PARAMS)
        self._scale = (1.0, 1.0)
        self._bounds = np.zeros((0, 2), np.int64)
        self._pool = keyed_pool("boost-enc", BfvSymmetric,
                                (PARAMS.name, self.secret.secret_key_bytes()), workers)

    def __getstate__(self) -> dict[str, Any]:
        # pickle's convention for an object that cannot be pickled is a TypeError
        raise TypeError("the BFV secret context stays in the label holder's process")

    def setup_payload(self) -> bytes:
        return self.secret.to_bytes()

    def encrypt_nodes(self, g: np.ndarray, h: np.ndarray, nodes: list[np.ndarray],
                      columns: int = 0) -> bytes:
        """The rows of ``nodes``; ``columns`` (the most candidate columns a feature holder
        may have, 0 if unknown) picks the layout width."""
        width = self.width or choose_width([len(r) for r in nodes], columns)
        self._scale = (_scale(g, nodes), _scale(h, nodes))
        biggest = max((len(r) for r in nodes), default=0)
        self.tolerance = max(1e-9, 0.5 * biggest / self._scale[1])
        per_ct = SLOTS // width
        n_cts = sum(-(-len(r) // per_ct) for r in nodes)
        step = per_ct * max(1, math.ceil(n_cts / (4 * self._pool.n)))  # rows per job
        jobs = []
        self._bounds = np.zeros((len(nodes), 2), np.int64)  # most |G|, |H| a node can sum to
        for k, rows in enumerate(nodes):
            gq = np.rint(g[rows] * self._scale[0]).astype(np.int64)
            hq = np.rint(h[rows] * self._scale[1]).astype(np.int64)
            self._bounds[k] = np.abs(gq).sum(), np.abs(hq).sum()
            jobs += [(gq[a:a + step], hq[a:a + step], width) for a in range(0, len(rows), step)]
        parts = [b for chunk in self._pool.map(_encrypt_job, jobs) for b in chunk]
        return msgspec.msgpack.encode(_Grads(width, [len(r) for r in nodes],
                                             msgspec.msgpack.encode(parts)))

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
        if msg.width < MIN_WIDTH or msg.width > MAX_WIDTH or msg.width & (msg.width - 1):
            raise ProtocolError(f"encrypted histograms with an invalid width {msg.width}")
        half = msg.width // 2
        groups = -(-len(cols) // half)
        if msg.n_results != n_nodes * groups:
            raise ProtocolError(f"expected {n_nodes * groups} histogram results, got "
                                f"{msg.n_results}")
        cts = self.secret.load(msg.cts, expect=msg.n_results)
        res = np.stack([self.secret.decrypt(ct)[: msg.width] for ct in cts]) \
            if cts else np.zeros((0, msg.width), np.int64)
        res = res.reshape(n_nodes, groups, msg.width)
        if len(self._bounds) == n_nodes and (
                (np.abs(res[:, :, :half]) > self._bounds[:, None, :1]).any()
                or (np.abs(res[:, :, half:]) > self._bounds[:, None, 1:]).any()):
            raise ProtocolError("decrypted histograms exceed what the node's rows can sum to: "
                                "not computed over this request's ciphertexts")
        g_sums = res[:, :, :half].reshape(n_nodes, -1)[:, : len(cols)] / self._scale[0]
        h_sums = res[:, :, half:].reshape(n_nodes, -1)[:, : len(cols)] / self._scale[1]
        out = np.zeros((n_nodes, n_features, n_slots, 2))
        out[:, cols[:, 0], cols[:, 1], 0] = g_sums
        out[:, cols[:, 0], cols[:, 1], 1] = h_sums
        return out


def _encrypt_job(key: str, gq: np.ndarray, hq: np.ndarray, width: int) -> list[bytes]:
    """Worker: encrypt rows laid out ``width`` slots each (G then H, each replicated)."""
    enc: BfvSymmetric = state(key)
    half = width // 2
    rows = np.concatenate([np.repeat(gq[:, None], half, 1), np.repeat(hq[:, None], half, 1)],
                          axis=1)
    return [enc.encrypt_bytes(v) for v in RowLayout(len(gq), width, slots=SLOTS).place(rows)]


class BfvPassive:
    """Feature holder: computes encrypted cumulative histograms in a pool of worker
    processes; never holds a secret key."""

    def __init__(self, setup_payload: bytes, workers: Any = None) -> None:
        self._setup = bytes(setup_payload)
        self.ctx = BfvPublic.from_bytes(self._setup)  # validates the keys early
        if self.ctx.params is not PARAMS:
            raise ProtocolError("the label holder's keys are not for SecureBoost histograms")
        self._pool = keyed_pool("boost-hist", BfvPublic.from_bytes, (self._setup,), workers)

    def __getstate__(self) -> dict[str, Any]:
        return {"setup": self._setup}

    def __setstate__(self, state_: dict[str, Any]) -> None:
        self.__init__(state_["setup"])  # type: ignore[misc]

    def histograms(self, payload: bytes, nodes: list[np.ndarray], codes: np.ndarray,
                   thresholds: np.ndarray) -> bytes:
        """The encrypted cumulative (G, H) sums of ``nodes`` for the label holder."""
        try:
            msg = msgspec.msgpack.decode(payload, type=_Grads)
            parts = msgspec.msgpack.decode(msg.cts, type=list[bytes])
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProtocolError("malformed encrypted gradients from the label holder") from exc
        if msg.sizes != [len(r) for r in nodes]:
            raise ProtocolError("encrypted gradients do not match the requested nodes")
        width = msg.width
        if width > MAX_WIDTH or width < MIN_WIDTH or width & (width - 1):
            raise ProtocolError(f"invalid layout width {width}")
        per_ct = SLOTS // width
        counts = [-(-n // per_ct) for n in msg.sizes]
        if len(parts) != sum(counts):
            raise ProtocolError(f"expected {sum(counts)} ciphertexts, got {len(parts)}")
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
        # only candidate slots that exist are computed, packed ``width / 2`` to a mask
        cols = np.argwhere(thresholds >= 0).astype("<i4")  # (feature, slot) pairs
        span = width // 2
        groups = [cols[a:a + span] for a in range(0, len(cols), span)]
        # a big node is cut into pieces of whole ciphertexts, one per worker, so that no
        # two workers load the same ciphertexts; pieces are added up below
        pieces = _pieces(counts, self._pool.n)
        items = [(i, q) for i in range(len(pieces)) for q in range(len(groups))]
        chunks = balanced_chunks([pieces[i][2] - pieces[i][1] for i, _ in items],
                                 self._pool.n)
        per_node = collections.Counter(k for k, _, _ in pieces)
        split_nodes = {k for k, n in per_node.items() if n > 1}
        recurring = _recurring(nodes, codes, thresholds)
        budget = _cache_budget(self._pool.n)
        jobs = []
        for chunk in chunks:
            mine = [items[i] for i in chunk]
            piece_data = {}
            for i in {i for i, _ in mine}:
                k, lo, hi = pieces[i]
                rows = nodes[k][lo * per_ct:hi * per_ct]
                key = (recurring[k], width, lo, hi) if k in recurring else None
                piece_data[i] = (parts[starts[k] + lo:starts[k] + hi], codes[rows],
                                 k not in split_nodes, key)
            jobs.append((piece_data, mine, thresholds, groups, width, budget))
        sums: dict[tuple[int, int], list[bytes]] = {}
        for chunk, results in zip(chunks, self._pool.map(_histogram_job, jobs), strict=True):
            for i, res in zip(chunk, results, strict=True):
                piece, q = items[i]
                sums.setdefault((pieces[piece][0], q), []).append(res)
        sums.update(self._fold_pieces({kq: v for kq, v in sums.items() if kq[0] in split_nodes},
                                      width))
        empty = [(k, q) for k in range(len(nodes)) for q in range(len(groups))
                 if (k, q) not in sums]
        if empty:  # empty nodes: zero sums, flooded like any result
            zero = _finished_zero(self.ctx, width)
            sums.update({kq: [zero] for kq in empty})
        out = [sums[k, q][0] for k in range(len(nodes)) for q in range(len(groups))]
        return msgspec.msgpack.encode(_Hists(width, len(out), cols.tobytes(),
                                             msgspec.msgpack.encode(out)))

    def _fold_pieces(self, sums: dict[tuple[int, int], list[bytes]], width: int
                     ) -> dict[tuple[int, int], list[bytes]]:
        """The pieces of a split node come back summed but not folded: add them up, then
        drop a prime, fold and flood each (node, group) result once, over the workers."""
        todo = sorted(sums)
        if not todo:
            return {}
        chunks = balanced_chunks([1.0] * len(todo), self._pool.n)
        jobs = [([sums[todo[t]] for t in chunk], width) for chunk in chunks]
        folded = [b for res in self._pool.map(_fold_job, jobs) for b in res]
        return {kq: [b] for kq, b in zip(todo, folded, strict=True)}


def _finish(ctx: BfvPublic, ct: seal.Ciphertext, width: int) -> bytes:
    """A summed result (coefficient form): one prime dropped, folded, flooded, as bytes."""
    ctx.evaluator.mod_switch_to_next_inplace(ct)
    ctx.fold(ct, width)
    ctx.flood(ct)
    return to_bytes(ct)


def _finished_zero(ctx: BfvPublic, width: int) -> bytes:
    return _finish(ctx, ctx.encrypt(np.zeros(SLOTS, np.int64)), width)


def _recurring(nodes: list[np.ndarray], codes: np.ndarray, thresholds: np.ndarray
               ) -> dict[int, str]:
    """Nodes with every row (a root without subsampling), which recur in every tree, with a
    digest of the columns (colsample may change them): the key of their cached masks."""
    n = len(codes)
    full = [k for k, r in enumerate(nodes) if len(r) == n and np.array_equal(r, np.arange(n))]
    if not full:
        return {}
    digest = hashlib.blake2b(np.ascontiguousarray(codes).tobytes() + thresholds.tobytes(),
                             digest_size=16).hexdigest()
    return dict.fromkeys(full, digest)


def _pieces(counts: list[int], n_workers: int) -> list[tuple[int, int, int]]:
    """(node, first ciphertext, end) pieces: a node with more than one worker's share of
    all ciphertexts is cut into equal pieces of at most about one share."""
    total = sum(counts)
    out = []
    for k, c in enumerate(counts):
        if not c:
            continue
        n = max(1, min(c, math.ceil(c * n_workers / total - 1e-9)))
        bounds = np.linspace(0, c, n + 1).round().astype(int)
        out += [(k, int(a), int(b)) for a, b in itertools.pairwise(bounds)]
    return out


def _cache_budget(n_workers: int) -> int:
    """Bytes of encoded masks each worker may keep."""
    mb = float(os.environ.get("FEDLAB_MASK_CACHE_MB", MASK_CACHE_MB))
    return int(mb * 2**20 / n_workers)


#: a worker's encoded root masks: (pool key, columns digest, width, piece start, piece end,
#: group) -> [(ciphertext index, mask)]
_MASKS: dict[tuple[Any, ...], list[tuple[int, seal.Plaintext]]] = {}


def _cached_bytes(key: str, columns: str) -> int:
    """Bytes of masks cached for pool ``key`` and these columns; the masks of other
    trainings or other columns go."""
    for k in [k for k in _MASKS if k[:2] != (key, columns)]:
        del _MASKS[k]
    return sum(len(v) for v in _MASKS.values()) * PLAINTEXT_BYTES


def _histogram_job(key: str, piece_data: dict[int, tuple[list[bytes], np.ndarray, bool,
                                                         tuple[Any, ...] | None]],
                   items: list[tuple[int, int]], thresholds: np.ndarray,
                   groups: list[np.ndarray], width: int, budget: int) -> list[bytes]:
    """Worker: the sums of each (piece, column group): finished (folded and flooded) when
    the piece is its whole node (``piece_data[i][2]``), else only summed (see
    :func:`_fold_job`). Masks of pieces that recur (``piece_data[i][3]``) are kept, within
    ``budget`` bytes, for the next tree."""
    ctx: BfvPublic = state(key)
    ev = ctx.evaluator
    loaded = {}
    for i, (cts, *_) in piece_data.items():
        items_i = ctx.load(msgspec.msgpack.encode(cts))
        for ct in items_i:
            ev.transform_to_ntt_inplace(ct)
        loaded[i] = items_i
    out = []
    for i, q in items:
        _, codes, whole, recurs = piece_data[i]
        layout = RowLayout(len(codes), width, slots=SLOTS)
        cache_key = (key, *recurs, q) if recurs else None
        blocks = _MASKS.get(cache_key) if cache_key else None
        if blocks is None:
            blocks = [(b, ctx.encode(vec, ntt_like=loaded[i][b]))
                      for b, vec in _masks(codes, thresholds, groups[q], layout)]
            if cache_key and _cached_bytes(key, cache_key[1]) + len(blocks) * PLAINTEXT_BYTES \
                    <= budget:
                _MASKS[cache_key] = blocks
        acc = ctx.sum_products((loaded[i][b], pt) for b, pt in blocks)
        if acc is None:  # no row of the piece is in any column of the group
            acc = ctx.encrypt(np.zeros(SLOTS, np.int64))
        out.append(_finish(ctx, acc, width) if whole else to_bytes(acc))
    return out


def _fold_job(key: str, results: list[list[bytes]], width: int) -> list[bytes]:
    """Worker: each result from its pieces' sums: added, then finished."""
    ctx: BfvPublic = state(key)
    out = []
    for partials in results:
        cts = ctx.load(msgspec.msgpack.encode(partials))
        for ct in cts[1:]:
            ctx.evaluator.add_inplace(cts[0], ct)
        out.append(_finish(ctx, cts[0], width))
    return out


def _masks(codes: np.ndarray, thresholds: np.ndarray, group: np.ndarray,
           layout: RowLayout) -> list[tuple[int, np.ndarray]]:
    """(ciphertext, 0/1 mask) of a column group: slots j and width/2 + j of a row are 1 when
    the row's code of column j's feature is at most its threshold and not missing; all-zero
    masks are left out."""
    feats, slots = group[:, 0], group[:, 1]
    c = codes[:, feats].astype(np.int32)  # (rows, columns)
    thr = thresholds[feats, slots].astype(np.int32)
    hit = ((c <= thr[None, :]) & (c != MISSING)).astype(np.int64)
    half = layout.width // 2
    mask = np.zeros((layout.n_rows, layout.width), np.int64)
    mask[:, : len(group)] = hit
    mask[:, half: half + len(group)] = hit
    return [(b, vec) for b, vec in enumerate(layout.place(mask)) if vec.any()]
