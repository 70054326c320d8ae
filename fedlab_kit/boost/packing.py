"""Where a histogram request's rows go in the BFV slots, and which layout a request uses.

A row takes a *block* of ``width`` slots (G over the first half, H over the second), so a
SEAL row of 4096 slots holds ``4096 / width`` blocks and a ciphertext twice as many. Up to
``lanes`` nodes share ciphertexts: the block at position ``c`` of a SEAL row belongs to
lane ``c mod lanes``, and lane ``n`` holds the rows of the pack's ``n``-th node, in order,
at positions ``u * lanes + n`` (``u`` its *place* in the lane), SEAL row 0 before row 1,
ciphertext by ciphertext. Rotating by ``lanes`` blocks moves every lane along itself, so
the diagonal sums of :mod:`fedlab_kit.boost.bfv` never mix two nodes.

Columns go ``width / 2`` to a *group* and ``K`` groups (a power of two, ``K * lanes`` at
most the blocks of a SEAL row) to a *batch*: one result per (pack, batch).
Both parties derive every position from the request's node sizes, width and lanes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ProtocolError
from ..he.bfv import HISTOGRAMS

SLOTS = HISTOGRAMS.slots
ROW = HISTOGRAMS.row
WIDTH = 64  # slots per row when the column count is unknown: a group of 32 columns
MIN_WIDTH = 4
MAX_WIDTH = 128
MAX_LANES = 64
# measured costs (ms, sealapi, N=8192) that choose a request's layout: a ciphertext
# (encode + encrypt + save at the label holder; load + NTT at a feature holder), a mask
# (encoded, NTT, multiplied), a diagonal (back from NTT, prime dropped), a rotation (two
# primes) and a result (flooded, saved, loaded, decrypted)
CT_MS, MASK_MS, DIAGONAL_MS, ROTATION_MS, RESULT_MS = 11.2, 1.4, 1.2, 2.1, 11.0


@dataclass(frozen=True)
class Pack:
    """The nodes (request indices, one per lane) that share ciphertexts, and their sizes."""

    nodes: tuple[int, ...]
    sizes: tuple[int, ...]
    width: int
    lanes: int

    @property
    def blocks_per_row(self) -> int:
        return ROW // self.width

    @property
    def per_lane(self) -> int:
        """Rows of one lane in one ciphertext."""
        return 2 * self.blocks_per_row // self.lanes

    @property
    def n_cts(self) -> int:
        return -(-max(self.sizes, default=0) // self.per_lane)

    def blocks(self, lane: int, lo: int = 0, hi: int | None = None
               ) -> tuple[slice, np.ndarray]:
        """The lane's rows in ciphertexts ``[lo, hi)`` (a slice of the node's rows) and
        their blocks, numbered from the first slot of ciphertext ``lo``."""
        hi = self.n_cts if hi is None else hi
        first, last = lo * self.per_lane, min(hi * self.per_lane, self.sizes[lane])
        j = np.arange(first, max(first, last)) - first
        ct, s = np.divmod(j, self.per_lane)
        row, place = np.divmod(s, self.per_lane // 2)
        return (slice(first, max(first, last)),
                (2 * ct + row) * self.blocks_per_row + place * self.lanes + lane)

    def place(self, values: np.ndarray, blocks: np.ndarray, n_cts: int) -> np.ndarray:
        """(rows, width) values at their blocks -> (n_cts, SLOTS) slot vectors."""
        out = np.zeros((n_cts * 2 * self.blocks_per_row, self.width), dtype=values.dtype)
        out[blocks] = values
        return out.reshape(n_cts, SLOTS)


def packs(sizes: list[int], width: int, lanes: int) -> list[Pack]:
    """The request's nodes in packs of ``lanes``, biggest first (so a pack's lanes are of
    similar length); nodes without rows are left out."""
    order = sorted((k for k, n in enumerate(sizes) if n), key=lambda k: (-sizes[k], k))
    return [Pack(tuple(order[a:a + lanes]), tuple(sizes[k] for k in order[a:a + lanes]),
                 width, lanes) for a in range(0, len(order), lanes)]


def batches(n_columns: int, width: int, lanes: int, padded: bool = False
            ) -> list[tuple[int, int, int]]:
    """(first column, end, K) of each batch. Groups of ``width / 2`` columns go as many to
    a batch as a lane has places; the rest in batches of the powers of two that make up
    their number, or (``padded``) in one batch padded to the next power of two: fewer
    results, more masks."""
    half = width // 2
    groups, places = -(-n_columns // half), ROW // width // lanes
    ks = [places] * (groups // places)
    rest = groups % places
    if rest and padded:
        ks.append(1 << (rest - 1).bit_length())
    elif rest:
        ks += [1 << b for b in reversed(range(rest.bit_length())) if rest >> b & 1]
    out, first = [], 0
    for k in ks:
        out.append((first * half, min((first + k) * half, n_columns), k))
        first += k
    return out


def check_layout(width: int, lanes: int) -> None:
    """A peer's layout: powers of two in range (else a ProtocolError)."""
    if width > MAX_WIDTH or width < MIN_WIDTH or width & (width - 1):
        raise ProtocolError(f"invalid layout width {width}")
    if lanes < 1 or lanes > min(MAX_LANES, ROW // width) or lanes & (lanes - 1):
        raise ProtocolError(f"invalid number of lanes {lanes} at width {width}")


def cost(sizes: list[int], columns: int, width: int, lanes: int, padded: bool) -> float:
    """Modelled milliseconds of one request in this layout."""
    shape = [k for _, _, k in batches(columns, width, lanes, padded)]
    per_pack = sum(DIAGONAL_MS * k + ROTATION_MS * (k + math.log2(ROW // (k * width * lanes)))
                   + RESULT_MS for k in shape)
    return sum(p.n_cts * (CT_MS + MASK_MS * sum(shape)) + per_pack
               for p in packs(sizes, width, lanes))


def choose_layout(sizes: list[int], columns: int, width: int | None = None
                  ) -> tuple[int, int, bool]:
    """(width, lanes, padded) of least modelled cost (``width`` fixed when given).

    Wider rows mean more ciphertexts to encrypt, send and load; narrower rows more groups,
    so more diagonals (rotations) per result; more lanes and padded batches fewer results
    (rotations and flooding), which pays when the nodes are many and small. Mask work
    (rows x columns / 4096 products) is about the same in every layout."""
    if not any(sizes) or columns <= 0:
        return width or WIDTH, 1, False
    options = []
    for w in [width] if width else [MIN_WIDTH << i for i in range(6)]:
        lanes = 1
        while lanes <= min(MAX_LANES, ROW // w):
            for padded in (False, True):
                options.append((cost(sizes, columns, w, lanes, padded), w, lanes, padded))
            lanes *= 2
    _, w, lanes, padded = min(options)
    return w, lanes, padded
