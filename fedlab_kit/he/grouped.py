"""Grouped sums under CKKS: the encrypted kernel behind SecureBoost's histograms.

The key owner lays out one *row* (a person, a sample) per ``width`` consecutive slots, with
its values replicated across the row (:class:`RowLayout`), and encrypts. An evaluator who
knows which rows belong to which groups multiplies each ciphertext by a 0/1 *mask*, adds
the products over all ciphertexts and folds the rows together with ``log2(SLOTS/width)``
rotations: slot ``j`` of every row then holds ``sum_i mask[i, j] * x[i, j]``. One mask is
one *group set*: with ``width = K`` a mask answers K groups at once (slot ``j`` = group j).

After the fold every row of the result holds the same sums, so the decrypting party learns
the group sums and nothing about single rows. Callers add DP noise and re-randomise before
sending a result back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import tenseal.sealapi as seal

from ..errors import InputError
from .ckks import SLOTS, PublicContext, power_of_two_steps

#: sparse 0/1 mask: (row indices, slot-in-row indices) of its ones
SparseMask = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class RowLayout:
    """``n_rows`` rows of ``width`` slots (a power of two), ``slots // width`` per ciphertext
    (``slots``: CKKS's 4096 by default; BFV's 16384 for counts)."""

    n_rows: int
    width: int
    slots: int = SLOTS

    def __post_init__(self) -> None:
        power_of_two_steps(self.width)  # validates width
        if self.n_rows < 1:
            raise InputError("a layout needs at least one row")

    @property
    def rows_per_ct(self) -> int:
        return self.slots // self.width

    @property
    def n_cts(self) -> int:
        return -(-self.n_rows // self.rows_per_ct)

    @property
    def fold_steps(self) -> list[int]:
        return power_of_two_steps(self.width)

    def place(self, rows: np.ndarray) -> np.ndarray:
        """(n_rows, width) values -> (n_cts, SLOTS) slot vectors, zero-padded."""
        if rows.shape != (self.n_rows, self.width):
            raise InputError(f"expected shape {(self.n_rows, self.width)}, got {rows.shape}")
        out = np.zeros((self.n_cts * self.rows_per_ct, self.width), dtype=rows.dtype)
        out[: self.n_rows] = rows
        return out.reshape(self.n_cts, self.slots)

    def place_sparse(self, mask: SparseMask) -> dict[int, np.ndarray]:
        """A sparse mask as {ciphertext index: 0/1 slot vector}, only non-empty ciphertexts."""
        rows, cols = mask
        flat = np.asarray(rows, dtype=np.int64) * self.width + np.asarray(cols, dtype=np.int64)
        blocks: dict[int, np.ndarray] = {}
        for b in np.unique(flat // self.slots):
            vec = np.zeros(self.slots)
            sel = flat[(flat // self.slots) == b] % self.slots
            vec[sel] = 1.0
            blocks[int(b)] = vec
        return blocks


def zero_product(ctx: PublicContext, like: seal.Ciphertext) -> seal.Ciphertext:
    """An encryption of zero at the level and scale a masked sum has after rescaling."""
    ct = ctx.encrypt(np.zeros(SLOTS))
    probe = seal.Ciphertext()
    ctx.evaluator.multiply_plain(like, ctx.encode(np.ones(SLOTS), like=like), probe)
    ctx.evaluator.rescale_to_next_inplace(probe)
    ctx.evaluator.mod_switch_to_inplace(ct, probe.parms_id())
    ct.scale = probe.scale
    return ct


def masked_sums(ctx: PublicContext, sources: Sequence[Sequence[seal.Ciphertext]],
                blocks: Iterable[tuple[int, np.ndarray | seal.Plaintext]], steps: Sequence[int]
                ) -> list[seal.Ciphertext]:
    """For each list of ciphertexts in ``sources``: the sum over ``blocks`` ``(b, vector)``
    of ciphertext ``b`` times the plaintext ``vector``, rescaled and folded with ``steps``.

    Each vector is encoded once (unless given encoded at the ciphertexts' level) and serves
    every source. A source no block touches gives an encryption of zero at the level of a
    product.
    """
    ev = ctx.evaluator
    accs: list[seal.Ciphertext | None] = [None] * len(sources)
    tmp = seal.Ciphertext()
    for b, vec in blocks:
        pt = vec if isinstance(vec, seal.Plaintext) else ctx.encode(vec, like=sources[0][b])
        for j, src in enumerate(sources):
            ev.multiply_plain(src[b], pt, tmp)
            if accs[j] is None:
                accs[j], tmp = tmp, seal.Ciphertext()
            else:
                ev.add_inplace(accs[j], tmp)
    out = []
    for src, acc in zip(sources, accs, strict=True):
        if acc is None:
            out.append(zero_product(ctx, src[0]))
            continue
        ev.rescale_to_next_inplace(acc)
        ctx.rotate_sum(acc, steps)
        out.append(acc)
    return out
