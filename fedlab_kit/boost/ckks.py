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
from ..he import PublicContext, RowLayout, SecretContext
from ..he.ckks import SLOTS, SymmetricEncryptor, _to_bytes
from ..he.grouped import masked_sums
from ..he.pool import KeyedPool, balanced_chunks, state, workers
from .binning import MISSING

WIDTH = 32  # slots per row when the column count is unknown: a complex mask answers 64
MIN_WIDTH = 2
MAX_WIDTH = 64
SUM_BOUND = 2.0**17
#: CKKS noise of a decrypted (scaled) sum per row and slot of its node: measured 5e-11 to
#: 6e-11 (e.g. 2e-4 for 100,000 rows at width 32); bounds use ten times that
NOISE_PER_ROW_SLOT = 6e-10
# measured costs (ms, sealapi, N=8192) that choose the width of a request: a ciphertext
# (encode + encrypt + save at the label holder; load + conjugate at a feature holder), a
# result (rescale, re-randomise, save, load, decrypt) and one fold rotation
CT_MS, RESULT_MS, ROTATION_MS = 6.5, 6.0, 0.95
#: memory (MB, all workers of a feature holder) for the encoded masks of the root, which
#: are the same in every tree without row subsampling; ``FEDLAB_MASK_CACHE_MB`` overrides
MASK_CACHE_MB = 1024
PLAINTEXT_BYTES = 2 * SLOTS * 2 * 8  # an encoded mask at the data level: 2 primes x N


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

    Mask work (rows x columns / 8192 plaintext encodings) does not depend on the width;
    what does: wider rows mean more ciphertexts to encrypt, send and conjugate, narrower
    rows more results to fold (``log2(4096 / width)`` rotations each) and decrypt. A root
    with 100,000 rows and 620 columns takes width 8; eight small nodes take 32.
    """
    busy = [n for n in sizes if n]
    if not busy or columns <= 0:
        return WIDTH
    best, best_cost = WIDTH, math.inf
    w = MIN_WIDTH
    while w <= MAX_WIDTH:
        cts = sum(-(-n * w // SLOTS) for n in busy)
        results = len(busy) * 2 * -(-columns // (2 * w))
        cost = cts * CT_MS + results * (RESULT_MS + ROTATION_MS * math.log2(SLOTS // w))
        if cost < best_cost:
            best, best_cost = w, cost
        w *= 2
    return best


def _steps() -> list[int]:
    """Keys for complex conjugation (step 0) and every power-of-two fold."""
    steps, s = [0], MIN_WIDTH
    while s < SLOTS:
        steps.append(s)
        s *= 2
    return steps


class CkksActive:
    """Label holder: owns the secret key; encrypts gradients, decrypts histograms.

    Encryption runs in a pool of this party's own worker processes (which get the secret
    key through the spawn pipe, never over the network)."""

    #: absolute error bound of the decrypted sums of the last request (see encrypt_nodes)
    tolerance = 1e-5

    def __init__(self, width: int | None = None) -> None:
        self.width = width  # None: chosen per request (:func:`choose_width`)
        self.secret = SecretContext(depth=1, rotations=_steps())
        self._scale = (1.0, 1.0)
        self._pool = KeyedPool(f"boost-enc-{id(self)}", SymmetricEncryptor,
                               (1, self.secret.secret_key_bytes()))

    def __getstate__(self) -> dict[str, Any]:
        # pickle's convention for an object that cannot be pickled is a TypeError
        raise TypeError("the CKKS secret context stays in the label holder's process")

    def setup_payload(self) -> bytes:
        return self.secret.to_bytes()

    def encrypt_nodes(self, g: np.ndarray, h: np.ndarray, nodes: list[np.ndarray],
                      columns: int = 0) -> bytes:
        """The rows of ``nodes``; ``columns`` (the most candidate columns a feature holder
        may have, 0 if unknown) picks the layout width."""
        width = self.width or choose_width([len(r) for r in nodes], columns)
        every = np.concatenate(nodes) if nodes else np.zeros(0, np.int64)
        # keep every sum well inside CKKS's range (|x| < 2**19 at the last level)
        self._scale = tuple(min(1.0, SUM_BOUND / max(float(np.abs(v[every]).sum()), 1e-300))
                            for v in (g, h))
        biggest = max((len(r) for r in nodes), default=0)
        self.tolerance = max(1e-5, NOISE_PER_ROW_SLOT * biggest * width / self._scale[1])
        per_ct = SLOTS // width
        n_cts = sum(-(-len(r) // per_ct) for r in nodes)
        step = per_ct * max(1, math.ceil(n_cts / (4 * workers())))  # rows per job
        jobs = []
        for rows in nodes:
            values = g[rows] * self._scale[0] + 1j * h[rows] * self._scale[1]
            jobs += [(values[a:a + step], width) for a in range(0, len(rows), step)]
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
        groups = -(-len(cols) // (2 * msg.width))
        if msg.n_results != 2 * n_nodes * groups:
            raise ProtocolError(f"expected {2 * n_nodes * groups} histogram results, got "
                                f"{msg.n_results}")
        cts = self.secret.load(msg.cts, expect=msg.n_results)
        res = np.stack([self.secret.decrypt(ct, complex_values=True)[: msg.width] for ct in cts]
                       ) if cts else np.zeros((0, msg.width), complex)
        # per group: S (real: 2G of the first w columns, imag: 2G of the next w) and
        # D (imag: 2H of the first w columns, real: -2H of the next w)
        res = res.reshape(n_nodes, groups, 2, msg.width) / 2
        g_sums = np.concatenate([res[:, :, 0].real, res[:, :, 0].imag], axis=2)
        h_sums = np.concatenate([res[:, :, 1].imag, -res[:, :, 1].real], axis=2)
        g_sums = g_sums.reshape(n_nodes, -1)[:, : len(cols)] / self._scale[0]
        h_sums = h_sums.reshape(n_nodes, -1)[:, : len(cols)] / self._scale[1]
        out = np.zeros((n_nodes, n_features, n_slots, 2))
        out[:, cols[:, 0], cols[:, 1], 0] = g_sums
        out[:, cols[:, 0], cols[:, 1], 1] = h_sums
        return out


def _encrypt_job(key: str, values: np.ndarray, width: int) -> list[bytes]:
    """Worker: encrypt rows (complex g + i h) laid out ``width`` slots each."""
    enc: SymmetricEncryptor = state(key)
    layout = RowLayout(len(values), width)
    return [enc.encrypt_bytes(v) for v in layout.place(np.repeat(values[:, None], width, 1))]


class CkksPassive:
    """Feature holder: computes encrypted cumulative histograms in a pool of worker
    processes; never holds a secret key."""

    def __init__(self, setup_payload: bytes) -> None:
        self._setup = bytes(setup_payload)
        self.ctx = PublicContext.from_bytes(self._setup)  # validates the keys early
        self._pool = KeyedPool(f"boost-hist-{self.ctx.digest()}", PublicContext.from_bytes,
                               (self._setup,))

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
        if width > SLOTS or width < MIN_WIDTH or width & (width - 1):
            raise ProtocolError(f"invalid layout width {width}")
        per_ct = SLOTS // width
        counts = [-(-n // per_ct) for n in msg.sizes]
        if len(parts) != sum(counts):
            raise ProtocolError(f"expected {sum(counts)} ciphertexts, got {len(parts)}")
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
        # only candidate slots that exist are computed, packed ``width`` to a mask
        cols = np.argwhere(thresholds >= 0).astype("<i4")  # (feature, slot) pairs
        span = 2 * width  # a complex mask carries two columns per slot
        groups = [cols[a:a + span] for a in range(0, len(cols), span)]
        # a big node is cut into pieces of whole ciphertexts, one per worker, so that no
        # two workers load and conjugate the same ciphertexts; pieces are added up below
        pieces = _pieces(counts, workers())
        items = [(i, q) for i in range(len(pieces)) for q in range(len(groups))]
        chunks = balanced_chunks([pieces[i][2] - pieces[i][1] for i, _ in items], workers())
        per_node = collections.Counter(k for k, _, _ in pieces)
        split_nodes = {k for k, n in per_node.items() if n > 1}
        recurring = _recurring(nodes, codes, thresholds)
        budget = _cache_budget()
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
        sums: dict[tuple[int, int], list[list[bytes]]] = {}
        for chunk, results in zip(chunks, self._pool.map(_histogram_job, jobs), strict=True):
            for i, res in zip(chunk, results, strict=True):
                piece, q = items[i]
                sums.setdefault((pieces[piece][0], q), []).append(res)
        sums.update(self._fold_pieces({kq: v for kq, v in sums.items() if kq[0] in split_nodes},
                                      width))
        zero = _to_bytes(self.ctx.encrypt(np.zeros(SLOTS)))  # empty nodes: zero sums
        out = []
        for k in range(len(nodes)):
            for q in range(len(groups)):
                out += sums[k, q][0] if (k, q) in sums else [zero, zero]
        return msgspec.msgpack.encode(_Hists(width, len(out), cols.tobytes(),
                                             msgspec.msgpack.encode(out)))


    def _fold_pieces(self, sums: dict[tuple[int, int], list[list[bytes]]], width: int
                     ) -> dict[tuple[int, int], list[list[bytes]]]:
        """The pieces of a split node come back rescaled but not folded: add them up, fold
        and re-randomise each (node, group) result once, spread over the workers."""
        todo = [(kq, j) for kq in sorted(sums) for j in range(2)]
        if not todo:
            return {}
        steps = RowLayout(1, width).fold_steps
        chunks = balanced_chunks([1.0] * len(todo), workers())
        jobs = [([[pair[j] for pair in sums[kq]] for kq, j in (todo[t] for t in chunk)], steps)
                for chunk in chunks]
        folded = [b for res in self._pool.map(_fold_job, jobs) for b in res]
        whole: dict[tuple[int, int], list[bytes]] = {}
        for (kq, j), b in zip(todo, folded, strict=True):
            whole.setdefault(kq, [b"", b""])[j] = b
        return {kq: [pair] for kq, pair in whole.items()}


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


def _cache_budget() -> int:
    """Bytes of encoded masks each worker may keep."""
    mb = float(os.environ.get("FEDLAB_MASK_CACHE_MB", MASK_CACHE_MB))
    return int(mb * 2**20 / workers())


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
                   groups: list[np.ndarray], width: int, budget: int) -> list[list[bytes]]:
    """Worker: the (S, D) sums of each (piece, column group): folded and re-randomised when
    the piece is its whole node (``piece_data[i][2]``), else only rescaled (see
    :func:`_fold_job`). Masks of pieces that recur (``piece_data[i][3]``) are kept, within
    ``budget`` bytes, for the next tree."""
    ctx: PublicContext = state(key)
    split = {i: _split_gradients(ctx, ctx.load(msgspec.msgpack.encode(cts)))
             for i, (cts, *_) in piece_data.items()}
    out = []
    for i, q in items:
        _, codes, whole, recurs = piece_data[i]
        layout = RowLayout(len(codes), width)
        cache_key = (key, *recurs, q) if recurs else None
        blocks = _MASKS.get(cache_key) if cache_key else None
        if blocks is None:
            blocks = _masks(codes, thresholds, groups[q], layout)
            if cache_key and _cached_bytes(key, cache_key[1]) + len(blocks) * PLAINTEXT_BYTES \
                    <= budget:
                blocks = [(b, ctx.encode(vec, like=split[i][0][b])) for b, vec in blocks]
                _MASKS[cache_key] = blocks
        pair = masked_sums(ctx, split[i], blocks, layout.fold_steps if whole else [])
        if whole:
            for res in pair:
                ctx.rerandomise(res)
        out.append([_to_bytes(res) for res in pair])
    return out


def _fold_job(key: str, results: list[list[bytes]], steps: list[int]) -> list[bytes]:
    """Worker: each result from its pieces' rescaled sums: added, folded, re-randomised."""
    ctx: PublicContext = state(key)
    out = []
    for partials in results:
        cts = ctx.load(msgspec.msgpack.encode(partials))
        for ct in cts[1:]:
            ctx.evaluator.add_inplace(cts[0], ct)
        ctx.rotate_sum(cts[0], steps)
        ctx.rerandomise(cts[0])
        out.append(_to_bytes(cts[0]))
    return out


def _split_gradients(ctx: PublicContext, cts: list[seal.Ciphertext]
                     ) -> tuple[list[seal.Ciphertext], list[seal.Ciphertext]]:
    """``g + i h`` -> ``2g`` and ``2ih`` (one conjugation each), so that one complex mask
    answers two columns: ``2g (m1 + i m2)`` holds both G sums, ``2ih (m1 + i m2)`` both H."""
    ev, gk = ctx.evaluator, ctx.galois_keys
    twice_g, twice_ih = [], []
    for ct in cts:
        conj, a, b = seal.Ciphertext(), seal.Ciphertext(), seal.Ciphertext()
        ev.complex_conjugate(ct, gk, conj)
        ev.add(ct, conj, a)
        ev.sub(ct, conj, b)
        twice_g.append(a)
        twice_ih.append(b)
    return twice_g, twice_ih


def _masks(codes: np.ndarray, thresholds: np.ndarray, group: np.ndarray,
           layout: RowLayout) -> list[tuple[int, np.ndarray]]:
    """(ciphertext, complex 0/1 mask) of a column group: slot j of a row is 1 when the row's
    code of column j's feature is at most its threshold (real part: the group's first
    ``width`` columns, imaginary part: the next ``width``); all-zero masks are left out."""
    feats, slots = group[:, 0], group[:, 1]
    c = codes[:, feats].astype(np.int32)  # (rows, columns)
    thr = thresholds[feats, slots].astype(np.int32)
    hit = ((c <= thr[None, :]) & (c != MISSING)).astype(float)
    w = layout.width
    mask = np.zeros((layout.n_rows, w), complex)
    mask.real[:, : min(w, len(group))] = hit[:, :w]
    if len(group) > w:
        mask.imag[:, : len(group) - w] = hit[:, w:]
    return [(b, vec) for b, vec in enumerate(layout.place(mask)) if vec.any()]
