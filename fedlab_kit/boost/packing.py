"""Where a histogram request's rows go in the BFV slots, and which layout a request uses.

A row takes a *block* of ``width`` slots, so a SEAL row of 4096 slots holds
``4096 / width`` blocks and a ciphertext twice as many. In a *joint* layout a block holds
the row's G replicated over its first half and H over its second; in a *split* layout the
row has a block in a G ciphertext and the same block in an H ciphertext, each replicated
over all ``width`` slots, so one encoded mask serves both. Up to ``lanes`` nodes share
ciphertexts: the block at position ``c`` of a SEAL row belongs to lane ``c mod lanes``, and
lane ``n`` holds the rows of the pack's ``n``-th node, in order, at positions
``u * lanes + n`` (``u`` its *place* in the lane), SEAL row 0 before row 1, ciphertext by
ciphertext. Rotating by ``lanes`` blocks moves every lane along itself, so the diagonal
sums of :mod:`fedlab_kit.boost.bfv` never mix two nodes.

Columns go ``span`` to a *group* (``width / 2`` joint, ``width`` split) and ``K`` groups
(a power of two, ``K * lanes`` at most the blocks of a SEAL row) to a *batch*: one result
per (pack, batch, channel). Both parties derive every position from the request's node
sizes and layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ProtocolError
from ..he.bfv import HISTOGRAMS

SLOTS = HISTOGRAMS.slots
ROW = HISTOGRAMS.row
WIDTH = 64  # slots per row when the column count is unknown
MIN_WIDTH = 4
MAX_WIDTH = 128
MAX_LANES = 64
# measured costs (ms, sealapi, N=8192) that choose a request's layout: a ciphertext
# (encode + encrypt + save at the label holder; load + NTT at a feature holder), a mask
# (encoded and NTT), a product (a ciphertext times a mask), a diagonal (back from NTT, a
# prime dropped), a rotation (two primes) and a result (flooded, saved, loaded, decrypted)
CT_MS, ENCODE_MS, PRODUCT_MS = 11.2, 1.0, 0.4
DIAGONAL_MS, ROTATION_MS, RESULT_MS = 1.2, 2.1, 11.0


@dataclass(frozen=True)
class Layout:
    """How a request is laid out (see the module docstring)."""

    width: int = WIDTH
    lanes: int = 1
    padded: bool = False
    split: bool = False

    @property
    def channels(self) -> int:
        """Ciphertexts per block position: 1 (joint) or 2 (G and H apart)."""
        return 2 if self.split else 1

    @property
    def span(self) -> int:
        """Columns per group."""
        return self.width if self.split else self.width // 2

    @property
    def blocks_per_row(self) -> int:
        return ROW // self.width

    @property
    def places(self) -> int:
        """Places of one lane in one SEAL row."""
        return self.blocks_per_row // self.lanes

    def check(self) -> None:
        """A peer's layout: powers of two in range (else a ProtocolError)."""
        w, lanes = self.width, self.lanes
        if not isinstance(w, int) or w > MAX_WIDTH or w < MIN_WIDTH or w & (w - 1):
            raise ProtocolError(f"invalid layout width {w}")
        if lanes < 1 or lanes > min(MAX_LANES, ROW // w) or lanes & (lanes - 1):
            raise ProtocolError(f"invalid number of lanes {lanes} at width {w}")

    def batches(self, n_columns: int) -> list[tuple[int, int, int]]:
        """(first column, end, K) of each batch. Groups go as many to a batch as a lane has
        places; the rest in batches of the powers of two that make up their number, or
        (``padded``) in one batch padded to the next power of two: fewer results, more
        masks."""
        groups = -(-n_columns // self.span)
        ks = [self.places] * (groups // self.places)
        rest = groups % self.places
        if rest and self.padded:
            ks.append(1 << (rest - 1).bit_length())
        elif rest:
            ks += [1 << b for b in reversed(range(rest.bit_length())) if rest >> b & 1]
        out, first = [], 0
        for k in ks:
            out.append((first * self.span, min((first + k) * self.span, n_columns), k))
            first += k
        return out


@dataclass(frozen=True)
class Pack:
    """The nodes (request indices, one per lane) that share ciphertexts, and their sizes."""

    nodes: tuple[int, ...]
    sizes: tuple[int, ...]
    layout: Layout

    @property
    def per_lane(self) -> int:
        """Rows of one lane in one ciphertext."""
        return 2 * self.layout.places

    @property
    def n_cts(self) -> int:
        """Block positions (ciphertexts per channel)."""
        return -(-max(self.sizes, default=0) // self.per_lane)

    def blocks(self, lane: int, lo: int = 0, hi: int | None = None
               ) -> tuple[slice, np.ndarray]:
        """The lane's rows in ciphertexts ``[lo, hi)`` (a slice of the node's rows) and
        their blocks, numbered from the first slot of ciphertext ``lo``."""
        hi = self.n_cts if hi is None else hi
        first, last = lo * self.per_lane, max(lo * self.per_lane,
                                              min(hi * self.per_lane, self.sizes[lane]))
        ct, s = np.divmod(np.arange(last - first), self.per_lane)
        row, place = np.divmod(s, self.layout.places)
        return (slice(first, last), (2 * ct + row) * self.layout.blocks_per_row
                + place * self.layout.lanes + lane)

    def place(self, values: np.ndarray, blocks: np.ndarray, n_cts: int) -> np.ndarray:
        """(rows, width) values at their blocks -> (n_cts, SLOTS) slot vectors."""
        out = np.zeros((n_cts * 2 * self.layout.blocks_per_row, self.layout.width),
                       dtype=values.dtype)
        out[blocks] = values
        return out.reshape(n_cts, SLOTS)


def packs(sizes: list[int], layout: Layout) -> list[Pack]:
    """The request's nodes in packs of ``layout.lanes``, biggest first (so a pack's lanes
    are of similar length); nodes without rows are left out."""
    order = sorted((k for k, n in enumerate(sizes) if n), key=lambda k: (-sizes[k], k))
    m = layout.lanes
    return [Pack(tuple(order[a:a + m]), tuple(sizes[k] for k in order[a:a + m]), layout)
            for a in range(0, len(order), m)]


def cost(sizes: list[int], columns: int, layout: Layout) -> float:
    """Modelled milliseconds of one request in this layout."""
    shape = [k for _, _, k in layout.batches(columns)]
    c, w, lanes = layout.channels, layout.width, layout.lanes
    per_pack = c * sum(DIAGONAL_MS * k + ROTATION_MS * (k + math.log2(ROW // (k * w * lanes)))
                       + RESULT_MS for k in shape)
    per_ct = c * CT_MS + (ENCODE_MS + c * PRODUCT_MS) * sum(shape)
    return sum(p.n_cts * per_ct + per_pack for p in packs(sizes, layout))


def choose_layout(sizes: list[int], columns: int) -> Layout:
    """The layout of least modelled cost.

    Wider rows mean more ciphertexts to encrypt, send and load; narrower rows more groups,
    so more diagonals (rotations) per result; more lanes and padded batches fewer results
    (rotations and flooding), which pays when the nodes are many and small; a split layout
    encodes each mask once for G and H, which pays when masks dominate (many rows)."""
    if not any(sizes) or columns <= 0:
        return Layout()
    options = []
    for w in [MIN_WIDTH << i for i in range(6)]:
        lanes = 1
        while lanes <= min(MAX_LANES, ROW // w):
            for padded in (False, True):
                for split in (False, True):
                    lay = Layout(w, lanes, padded, split)
                    options.append((cost(sizes, columns, lay), w, lanes, padded, split))
            lanes *= 2
    _, w, lanes, padded, split = min(options)
    return Layout(w, lanes, padded, split)
