"""How rows of values are laid out in the slots of ciphertexts, and sparse 0/1 masks.

The key owner lays out one *row* (a person, a sample) per ``width`` consecutive slots, with
its values replicated across the row, and encrypts. An evaluator who knows which rows belong
to which groups multiplies each ciphertext by a 0/1 *mask*, adds the products over all
ciphertexts and folds the rows together with rotations: slot ``j`` of every row then holds
``sum_i mask[i, j] * x[i, j]``, so the decrypting party learns group sums and nothing about
single rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

#: sparse 0/1 mask: (row indices, slot-in-row indices) of its ones
SparseMask = tuple[np.ndarray, np.ndarray]


def power_of_two_steps(width: int, slots: int) -> list[int]:
    """Rotation steps ``width, 2*width, ..., slots/2`` that fold rows of ``width`` slots."""
    if width <= 0 or width & (width - 1) or width > slots:
        raise InputError(f"row width must be a power of two <= {slots}, got {width}")
    steps, s = [], width
    while s < slots:
        steps.append(s)
        s *= 2
    return steps


@dataclass(frozen=True)
class RowLayout:
    """``n_rows`` rows of ``width`` slots (a power of two), ``slots // width`` per
    ciphertext."""

    n_rows: int
    width: int
    slots: int

    def __post_init__(self) -> None:
        power_of_two_steps(self.width, self.slots)  # validates width
        if self.n_rows < 1:
            raise InputError("a layout needs at least one row")

    @property
    def rows_per_ct(self) -> int:
        return self.slots // self.width

    @property
    def n_cts(self) -> int:
        return -(-self.n_rows // self.rows_per_ct)

    def place(self, rows: np.ndarray) -> np.ndarray:
        """(n_rows, width) values -> (n_cts, slots) slot vectors, zero-padded."""
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
            vec = np.zeros(self.slots, dtype=np.int64)
            sel = flat[(flat // self.slots) == b] % self.slots
            vec[sel] = 1
            blocks[int(b)] = vec
        return blocks
