"""Cuckoo hashing for the KKRT receiver: every ID in one of its three bins, one ID per bin.

Insertion runs in parallel rounds over numpy arrays: every ID not yet placed moves into its
next choice of bin, evicting the bin's occupant, until none is left. With three hash
functions and ``1.27 n`` bins it fails (a cycle, or too many rounds) with probability below
2^-40 at the sizes the kit runs (Pinkas, Schneider and Zohner, "Scalable Private Set
Intersection Based on OT Extension", ACM TOPS 2018, whose parameters these are); the
receiver then draws a fresh seed and starts again (the sender sees only the seed used).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InternalError

FUNCTIONS = 3
LOAD = 1.27  # bins per ID
SMALL = 32  # extra bins, for the small sets the asymptotic figure does not cover
ROUNDS = 2000


def n_bins(n: int) -> int:
    """Bins for ``n`` IDs: a multiple of 8 (whole bytes of the OT-extension columns)."""
    m = math.ceil(LOAD * n) + SMALL
    return m + (-m % 8)


class CuckooFailed(InternalError):
    """No placement found within the rounds allowed: the caller draws a new seed."""


def place(positions: np.ndarray, bins: int, rounds: int = ROUNDS) -> tuple[np.ndarray,
                                                                          np.ndarray]:
    """Cuckoo placement of IDs with the (n, 3) candidate ``positions``.

    Returns ``(table, choice)``: ``table[b]`` the ID in bin b (-1 if empty) and
    ``choice[i]`` which of its three functions placed ID i."""
    n = len(positions)
    table = np.full(bins, -1, np.int64)
    choice = np.zeros(n, np.int64)
    pending = np.arange(n, dtype=np.int64)
    for _ in range(rounds):
        if not pending.size:
            return table, choice
        target = positions[pending, choice[pending]]
        old = table[target]
        table[target] = pending  # among IDs aiming at one bin, one wins
        won = table[target] == pending
        # a bin's old occupant is out when someone won it (once, however many aimed at it)
        first = np.zeros(len(target), bool)
        _, at = np.unique(target[won], return_index=True)
        first[np.flatnonzero(won)[at]] = True
        evicted = old[first & (old >= 0)]
        lost = pending[~won]
        moved = np.concatenate([lost, evicted])
        choice[moved] = (choice[moved] + 1) % FUNCTIONS
        pending = moved
    if pending.size:
        raise CuckooFailed(f"cuckoo hashing left {pending.size} of {n} IDs without a bin")
    return table, choice
