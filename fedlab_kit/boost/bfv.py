"""The encrypted SecureBoost backend: fixed-point gradients under BFV, histograms flooded.

The label holder rounds each row's gradients to integers, ``g * S_g`` and ``h * S_h`` with
powers of two ``S`` chosen per request so that every node sum stays well inside the plain
modulus (a 36-bit prime, ``fedlab_kit.he.bfv.HISTOGRAMS``), and lays the rows out in
blocks of slots, G and H in one ciphertext or apart, the nodes of a request in packs that
share ciphertexts lane by lane (:mod:`fedlab_kit.boost.packing`, which also chooses the
layout of each request from a measured cost model).

A feature holder's candidate (feature, threshold) columns go ``span`` to a group; a
group's mask is 1 at slot ``j`` of a row's G (and H) values when the row's code of
column j's feature is at most its threshold and not missing (thresholds are in the feature
holder's shuffled order). ``K`` groups share one result, in the diagonal layout of Halevi
and Shoup: the mask of *diagonal* ``d`` gives a row at place ``u`` of its lane group
``(u - d) mod K``, each diagonal's products are added over the pack's ciphertexts, and
``sum_d rot^d(D_d)`` (Horner's rule: ``K - 1`` rotations by one place, ``lanes`` blocks)
leaves at place ``u`` of every lane the sum of group ``u mod K`` over ``K`` consecutive
rows of that lane. One prime is dropped first; a fold over the remaining places
(``log2(4096 / (K lanes width))`` rotations and the column swap) sums every row of each
lane, and the result is flooded before it goes back: a fresh encryption of zero plus
uniform noise of 2^b on its first component (see :mod:`fedlab_kit.he.bfv`). Place
``u < K`` of lane ``n`` then holds the exact sums of group ``u`` over the rows of the
pack's ``n``-th node, so the label holder decrypts exactly the cumulative sums it asked
for, within statistical distance 2^-40 of a fresh encryption of them; the feature holder
sees only ciphertexts.

Rounding to integers is the only approximation: sums are off by at most half a unit per
row (``tolerance``), far below what decides a split.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import math
import os
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
import tenseal.sealapi as seal

from ..errors import InputError, ProtocolError
from ..he.bfv import HISTOGRAMS, BfvPublic, BfvSecret, BfvSymmetric
from ..he.pool import balanced_chunks, keyed_pool, state
from ..he.serial import to_bytes
from .binning import MISSING
from .packing import (
    DIAGONAL_MS,
    ENCODE_MS,
    MIN_WIDTH,
    PRODUCT_MS,
    ROTATION_MS,
    Layout,
    Pack,
    choose_layout,
    packs,
)

PARAMS = HISTOGRAMS
SLOTS = PARAMS.slots
#: every |sum| of scaled gradients stays below 2^34, a quarter of the plain modulus
SUM_LIMIT = 2.0**34
#: memory (MB, all workers of a feature holder) for the encoded masks of the root, which
#: are the same in every tree without row subsampling: 2048 (100,000 rows x 620 candidate
#: columns take ~1.5 GB), at most an eighth of this machine's memory;
#: ``FEDLAB_MASK_CACHE_MB`` overrides
MASK_CACHE_MB = 2048
PLAINTEXT_BYTES = (len(PARAMS.coeff_bits) - 1) * SLOTS * 8  # an NTT mask at the data level


class _Layout(msgspec.Struct, array_like=True):
    width: int
    lanes: int
    padded: bool
    split: bool

    def get(self) -> Layout:
        layout = Layout(self.width, self.lanes, self.padded, self.split)
        layout.check()
        return layout


class _Grads(msgspec.Struct, array_like=True):
    layout: _Layout
    sizes: list[int]
    cts: bytes  # per pack, per block position, per channel


class _Hists(msgspec.Struct, array_like=True):
    layout: _Layout
    n_results: int
    columns: bytes  # int32 (feature, slot) of each packed column, in order
    cts: bytes  # per pack, per batch, per channel


def _wire(layout: Layout) -> _Layout:
    return _Layout(layout.width, layout.lanes, layout.padded, layout.split)


def _scale(values: np.ndarray, nodes: list[np.ndarray]) -> float:
    """The power of two that keeps the biggest node's sum of |values| below SUM_LIMIT."""
    biggest = max((float(np.abs(values[r]).sum()) for r in nodes), default=0.0)
    return 2.0 ** math.floor(math.log2(SUM_LIMIT / max(biggest, 1e-300)))


def _block_values(layout: Layout, gq: np.ndarray, hq: np.ndarray) -> list[np.ndarray]:
    """Per channel, the (rows, width) block of each row: G then H halves (joint), or G's
    and H's blocks (split), each value replicated."""
    w = layout.width
    if layout.split:
        return [np.repeat(gq[:, None], w, 1), np.repeat(hq[:, None], w, 1)]
    return [np.concatenate([np.repeat(gq[:, None], w // 2, 1),
                            np.repeat(hq[:, None], w // 2, 1)], axis=1)]


class BfvActive:
    """Label holder: owns the secret key; encrypts gradients, decrypts histograms.

    Encryption runs in a pool of this party's own worker processes (which get the secret
    key through the spawn pipe, never over the network)."""

    #: absolute error bound of the decrypted sums of the last request (rounding)
    tolerance = 1e-9

    def __init__(self, layout: Layout | None = None, workers: Any = None) -> None:
        """``layout``: one for every request (default: chosen per request, see
        :func:`.packing.choose_layout`); ``workers``: the party's
        :class:`~fedlab_kit.compute.Workers` (default: this machine's processes)."""
        if layout is not None:  # one that mixes lanes or overflows a ciphertext: refused here
            try:
                layout.check()
            except ProtocolError as exc:
                raise InputError(f"BfvActive(layout=...): {exc}") from None
        self.layout = layout
        self.secret = BfvSecret(MIN_WIDTH, relin=False, params=PARAMS)
        self._scale = (1.0, 1.0)
        self._bounds = np.zeros((0, 2), np.int64)
        self._sizes: list[int] = []
        self._layout: Layout | None = None
        self._columns_seen = 0  # the most candidate columns a feature holder answered with
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
        may have, 0 if unknown; once feature holders have answered, the most they answered
        with) picks the layout."""
        sizes = [len(r) for r in nodes]
        layout = self.layout or choose_layout(sizes, self._columns_seen or columns)
        self._layout, self._sizes = layout, sizes
        self._scale = (_scale(g, nodes), _scale(h, nodes))
        self.tolerance = max(1e-9, 0.5 * max(sizes, default=0) / self._scale[1])
        self._bounds = np.zeros((len(nodes), 2), np.int64)  # most |G|, |H| a node can sum to
        all_packs = packs(sizes, layout)
        n_cts = sum(p.n_cts for p in all_packs)
        step = max(1, math.ceil(n_cts / (4 * self._pool.n)))  # block positions per job
        jobs = []
        for pack in all_packs:
            quantised = []
            for k in pack.nodes:
                gq = np.rint(g[nodes[k]] * self._scale[0]).astype(np.int64)
                hq = np.rint(h[nodes[k]] * self._scale[1]).astype(np.int64)
                self._bounds[k] = np.abs(gq).sum(), np.abs(hq).sum()
                quantised.append((gq, hq))
            for lo in range(0, pack.n_cts, step):
                hi = min(lo + step, pack.n_cts)
                parts = [(pack.blocks(n, lo, hi), q) for n, q in enumerate(quantised)]
                jobs.append((np.concatenate([q[0][r] for (r, _), q in parts]),
                             np.concatenate([q[1][r] for (r, _), q in parts]),
                             np.concatenate([b for (_, b), _ in parts]), hi - lo, pack))
        parts = [b for chunk in self._pool.map(_encrypt_job, jobs) for b in chunk]
        return msgspec.msgpack.encode(_Grads(_wire(layout), sizes,
                                             msgspec.msgpack.encode(parts)))

    def decrypt_histograms(self, payload: bytes, n_nodes: int, n_features: int,
                           n_slots: int) -> np.ndarray:
        try:
            msg = msgspec.msgpack.decode(payload, type=_Hists)
            layout = msg.layout.get()
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProtocolError("malformed encrypted histograms from a feature holder") from exc
        cols = np.frombuffer(msg.columns, dtype="<i4").reshape(-1, 2) \
            if len(msg.columns) % 8 == 0 else np.zeros((0, 2), np.int32)
        if len(cols) * 8 != len(msg.columns) or (len(cols) and (
                cols[:, 0].min() < 0 or cols[:, 0].max() >= n_features
                or cols[:, 1].min() < 0 or cols[:, 1].max() >= n_slots)):
            raise ProtocolError("encrypted histograms name columns outside the histogram")
        if layout != self._layout:
            raise ProtocolError(f"encrypted histograms in layout {layout}, not the requested "
                                f"{self._layout}")
        if len(self._sizes) != n_nodes:
            raise ProtocolError(f"histograms for {n_nodes} nodes, {len(self._sizes)} requested")
        self._columns_seen = max(self._columns_seen, len(cols))  # a checked reply only
        spans, span, c = layout.batches(len(cols)), layout.span, layout.channels
        shape = [k for _, _, k in spans]
        all_packs = packs(self._sizes, layout)
        if msg.n_results != len(all_packs) * len(shape) * c:
            raise ProtocolError(f"expected {len(all_packs) * len(shape) * c} histogram "
                                f"results, got {msg.n_results}")
        cts = self.secret.load(msg.cts, expect=msg.n_results)
        # result (pack, batch, channel): place u < K of lane n holds group u of the n-th
        # node, as G then H halves (joint) or G's or H's sums (split)
        sums = np.zeros((2, n_nodes, sum(shape), span), np.int64)  # G, H
        for i, ct in enumerate(cts):
            p, rest = divmod(i, len(shape) * c)
            b, channel = divmod(rest, c)
            first, k = sum(shape[:b]), shape[b]
            blocks = self.secret.decrypt(ct).reshape(-1, layout.width)
            for n, node in enumerate(all_packs[p].nodes):
                got = blocks[np.arange(k) * layout.lanes + n]
                if layout.split:
                    sums[channel, node, first:first + k] = got
                else:
                    sums[:, node, first:first + k] = got[:, :span], got[:, span:]
        if len(self._bounds) == n_nodes and (
                (np.abs(sums[0]) > self._bounds[:, None, None, 0]).any()
                or (np.abs(sums[1]) > self._bounds[:, None, None, 1]).any()):
            raise ProtocolError("decrypted histograms exceed what the node's rows can sum to: "
                                "not computed over this request's ciphertexts")
        # a batch's groups past its columns are padding (zero): column i of a batch is
        # slot i % span of its group i // span
        index = np.concatenate([sum(shape[:b]) * span + np.arange(hi - lo)
                                for b, (lo, hi, _) in enumerate(spans)]) \
            if len(cols) else np.zeros(0, np.int64)
        out = np.zeros((n_nodes, n_features, n_slots, 2))
        for j in range(2):
            out[:, cols[:, 0], cols[:, 1], j] = \
                sums[j].reshape(n_nodes, -1)[:, index] / self._scale[j]
        return out


def _encrypt_job(key: str, gq: np.ndarray, hq: np.ndarray, blocks: np.ndarray, n_cts: int,
                 pack: Pack) -> list[bytes]:
    """Worker: encrypt ``n_cts`` block positions of a pack, each row at its block; per
    position one ciphertext per channel."""
    enc: BfvSymmetric = state(key)
    placed = [pack.place(v, blocks, n_cts) for v in _block_values(pack.layout, gq, hq)]
    return [enc.encrypt_bytes(ch[b]) for b in range(n_cts) for ch in placed]


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
            layout = msg.layout.get()
            parts = msgspec.msgpack.decode(msg.cts, type=list[bytes])
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProtocolError("malformed encrypted gradients from the label holder") from exc
        if msg.sizes != [len(r) for r in nodes]:
            raise ProtocolError("encrypted gradients do not match the requested nodes")
        c = layout.channels
        all_packs = packs(msg.sizes, layout)
        counts = [p.n_cts for p in all_packs]
        if len(parts) != sum(counts) * c:
            raise ProtocolError(f"expected {sum(counts) * c} ciphertexts, got {len(parts)}")
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
        # only candidate slots that exist are computed: ``span`` to a group, K groups to a
        # batch, one result per (pack, batch, channel)
        cols = np.argwhere(thresholds >= 0).astype("<i4")  # (feature, slot) pairs
        spans = layout.batches(len(cols))
        ks = [k for _, _, k in spans]
        # a big pack is cut into pieces of whole block positions, about one worker's share
        # each; (piece, batch) items are then balanced over the workers, so a piece's
        # batches may land on two workers (each loads its ciphertexts); pieces are added
        # up below
        pieces = _pieces(counts, self._pool.n)
        items = [(i, q) for i in range(len(pieces)) for q in range(len(spans))]
        chunks = balanced_chunks(
            [(pieces[i][2] - pieces[i][1]) * (ENCODE_MS + c * PRODUCT_MS) * ks[q]
             + c * (DIAGONAL_MS + ROTATION_MS) * ks[q] for i, q in items], self._pool.n)
        per_pack = collections.Counter(k for k, _, _ in pieces)
        split = {k for k, n in per_pack.items() if n > 1}
        recurring = _recurring(nodes, codes, thresholds)
        budget = _cache_budget(self._pool.n)
        jobs = []
        for chunk in chunks:
            mine = [items[i] for i in chunk]
            piece_data = {}
            for i in {i for i, _ in mine}:
                k, lo, hi = pieces[i]
                pack = all_packs[k]
                lanes_rows = [pack.blocks(n, lo, hi) for n in range(len(pack.nodes))]
                rows = np.concatenate([nodes[node][r] for node, (r, _) in
                                       zip(pack.nodes, lanes_rows, strict=True)])
                blocks = np.concatenate([b for _, b in lanes_rows])
                root = pack.nodes[0] if len(pack.nodes) == 1 else None
                key = (recurring[root], layout, lo, hi) if root in recurring else None
                piece_data[i] = (parts[(starts[k] + lo) * c:(starts[k] + hi) * c],
                                 codes[rows], blocks, pack, k not in split, key)
            jobs.append((piece_data, mine, thresholds, [(cols[a:b], k) for a, b, k in spans],
                         budget))
        sums: dict[tuple[int, int], list[list[bytes]]] = {}
        for chunk, results in zip(chunks, self._pool.map(_histogram_job, jobs), strict=True):
            for i, res in zip(chunk, results, strict=True):
                piece, q = items[i]
                sums.setdefault((pieces[piece][0], q), []).append(res)
        sums.update(self._fold_pieces({kq: v for kq, v in sums.items() if kq[0] in split},
                                      [k * layout.width * layout.lanes for k in ks]))
        out = [b for k in range(len(all_packs)) for q in range(len(spans)) for b in sums[k, q][0]]
        return msgspec.msgpack.encode(_Hists(_wire(layout), len(out), cols.tobytes(),
                                             msgspec.msgpack.encode(out)))

    def _fold_pieces(self, sums: dict[tuple[int, int], list[list[bytes]]],
                     fold_widths: list[int]) -> dict[tuple[int, int], list[list[bytes]]]:
        """The pieces of a split pack come back summed but not folded: add them up, then
        fold and flood each (pack, batch) result once, over the workers."""
        todo = sorted(sums)
        if not todo:
            return {}
        chunks = balanced_chunks([1.0] * len(todo), self._pool.n)
        jobs = [([sums[todo[t]] for t in chunk], [fold_widths[todo[t][1]] for t in chunk])
                for chunk in chunks]
        folded = [b for res in self._pool.map(_fold_job, jobs) for b in res]
        return {kq: [b] for kq, b in zip(todo, folded, strict=True)}


def diagonal_sum(ctx: BfvPublic, cts: list[list[seal.Ciphertext]], k: int,
                 diagonal: Callable[[int], list[tuple[int, seal.Plaintext]]], step: int
                 ) -> list[seal.Ciphertext]:
    """Per channel, ``sum_d rot^d(D_d)`` over ``d < k``, ``D_d = sum_b cts[channel][b] *
    mask`` over the (block position, mask) pairs of ``diagonal(d)`` (asked for once each,
    from ``k - 1`` down), ``rot`` a rotation by ``step`` slots (Horner's rule), with one
    prime dropped: coefficient form, not yet folded."""
    ev = ctx.evaluator
    out: list[seal.Ciphertext | None] = [None] * len(cts)
    for d in reversed(range(k)):
        pairs = diagonal(d)
        for c, channel in enumerate(cts):
            if out[c] is not None:
                ev.rotate_rows_inplace(out[c], step, ctx.galois_keys)
            acc = ctx.sum_products((channel[b], pt) for b, pt in pairs)
            if acc is None:
                continue
            ev.mod_switch_to_next_inplace(acc)
            if out[c] is None:
                out[c] = acc
            else:
                ev.add_inplace(out[c], acc)
    done = []
    for ct in out:
        if ct is None:  # no row of the piece is in any column of the batch
            ct = ctx.encrypt(np.zeros(SLOTS, np.int64))
            ev.mod_switch_to_next_inplace(ct)
        done.append(ct)
    return done


def _finish(ctx: BfvPublic, ct: seal.Ciphertext, fold_width: int) -> bytes:
    """A diagonal sum folded over blocks of ``fold_width`` slots, flooded, as bytes."""
    ctx.fold(ct, fold_width)
    ctx.flood(ct)
    return to_bytes(ct)


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
    """(pack, first block position, end) pieces: a pack with more than one worker's share
    of all block positions is cut into equal pieces of at most about one share."""
    total = sum(counts)
    out = []
    for k, c in enumerate(counts):
        if not c:
            continue
        n = max(1, min(c, math.ceil(c * n_workers / total - 1e-9)))
        bounds = np.linspace(0, c, n + 1).round().astype(int)
        out += [(k, int(a), int(b)) for a, b in itertools.pairwise(bounds)]
    return out


def mask_cache_mb() -> float:
    """The mask cache budget (MB, all workers): ``FEDLAB_MASK_CACHE_MB``, or the default."""
    if "FEDLAB_MASK_CACHE_MB" in os.environ:
        return float(os.environ["FEDLAB_MASK_CACHE_MB"])
    try:
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return float(MASK_CACHE_MB)
    return float(min(MASK_CACHE_MB, memory_mb // 8))


def _cache_budget(n_workers: int) -> int:
    """Bytes of encoded masks each worker may keep."""
    mb = mask_cache_mb()
    return int(mb * 2**20 / n_workers)


#: a worker's encoded root masks: (pool key, columns digest, layout, piece start, piece
#: end, batch) -> per diagonal [(block position, mask)]
_MASKS: dict[tuple[Any, ...], list[list[tuple[int, seal.Plaintext]]]] = {}


def _cached_bytes(key: str, columns: str) -> int:
    """Bytes of masks cached for pool ``key`` and these columns; the masks of other
    trainings or other columns go."""
    for k in [k for k in _MASKS if k[:2] != (key, columns)]:
        del _MASKS[k]
    return sum(map(len, (d for v in _MASKS.values() for d in v))) * PLAINTEXT_BYTES


def _histogram_job(key: str, piece_data: dict[int, tuple[Any, ...]],
                   items: list[tuple[int, int]], thresholds: np.ndarray,
                   batch_columns: list[tuple[np.ndarray, int]], budget: int
                   ) -> list[list[bytes]]:
    """Worker: per channel, the diagonal sum of each (piece, column batch): finished
    (folded and flooded) when the piece is its whole pack, else only summed (see
    :func:`_fold_job`). A piece is (ciphertexts, codes of its rows, their blocks, pack,
    whole, cache key); masks of pieces that recur (a cache key) are kept, within
    ``budget`` bytes, for the next tree."""
    ctx: BfvPublic = state(key)
    ev = ctx.evaluator
    loaded = {}
    for i, (cts, _, _, pack, *_) in piece_data.items():
        flat = ctx.load(msgspec.msgpack.encode(cts), fresh=True)
        for ct in flat:
            ev.transform_to_ntt_inplace(ct)
        c = pack.layout.channels
        loaded[i] = [flat[j::c] for j in range(c)]  # per channel, per block position
    out = []
    for i, q in items:
        _, codes, blocks, pack, whole, recurs = piece_data[i]
        lay = pack.layout
        columns, k = batch_columns[q]
        cache_key = (key, *recurs, q) if recurs else None
        masks = _MASKS.get(cache_key) if cache_key else None
        if masks is None:
            first = loaded[i][0]
            bits = diagonal_masks(codes, thresholds, columns, blocks, len(first), pack, k)
            used = bits.any(axis=2)

            def encoded(d: int, bits: np.ndarray = bits, used: np.ndarray = used,
                        first: list[seal.Ciphertext] = first
                        ) -> list[tuple[int, seal.Plaintext]]:
                return [(b, ctx.encode_bits(bits[d, b], first[b]))
                        for b in np.flatnonzero(used[d])]

            if cache_key and _cached_bytes(key, cache_key[1]) \
                    + int(used.sum()) * PLAINTEXT_BYTES <= budget:
                masks = _MASKS[cache_key] = [encoded(d) for d in range(k)]
        # masks not kept are encoded one diagonal at a time, used and dropped
        diagonal = masks.__getitem__ if masks is not None else encoded
        accs = diagonal_sum(ctx, loaded[i], k, diagonal, lay.lanes * lay.width)
        out.append([_finish(ctx, acc, k * lay.lanes * lay.width) for acc in accs] if whole
                   else [to_bytes(acc) for acc in accs])
    return out


def _fold_job(key: str, results: list[list[list[bytes]]], fold_widths: list[int]
              ) -> list[list[bytes]]:
    """Worker: each result from its pieces' diagonal sums (per channel): added, then
    finished."""
    ctx: BfvPublic = state(key)
    out = []
    for partials, fold_width in zip(results, fold_widths, strict=True):
        done = []
        for channel in zip(*partials, strict=True):
            cts = ctx.load(msgspec.msgpack.encode(list(channel)))
            for ct in cts[1:]:
                ctx.evaluator.add_inplace(cts[0], ct)
            done.append(_finish(ctx, cts[0], fold_width))
        out.append(done)
    return out


def diagonal_masks(codes: np.ndarray, thresholds: np.ndarray, batch: np.ndarray,
                   blocks: np.ndarray, n_cts: int, pack: Pack, k: int) -> np.ndarray:
    """(k, n_cts, SLOTS) uint8: the 0/1 mask of each diagonal ``d < k`` at each of
    ``n_cts`` block positions whose rows (``codes``) sit at ``blocks``. A row at place
    ``u`` of its lane gets group ``(u - d) mod k`` of the batch: slot j of its G (and H)
    values is 1 when the row's code of the group's column j is at most its threshold and
    not missing."""
    lay = pack.layout
    feats, slots = batch[:, 0], batch[:, 1]
    hit = np.zeros((len(codes), k * lay.span), np.uint8)
    c = codes[:, feats]
    hit[:, : len(batch)] = (c <= thresholds[feats, slots][None, :]) & (c != MISSING)
    hit = hit.reshape(len(codes), k, lay.span)
    place = (blocks % lay.blocks_per_row) // lay.lanes
    groups = (place[None, :] - np.arange(k)[:, None]) % k  # (k, rows)
    values = hit[np.arange(len(codes))[None, :], groups]  # (k, rows, span)
    if not lay.split:
        values = np.concatenate([values, values], axis=2)
    out = np.zeros((k, n_cts * 2 * lay.blocks_per_row, lay.width), np.uint8)
    out[:, blocks] = values
    return out.reshape(k, n_cts, SLOTS)
