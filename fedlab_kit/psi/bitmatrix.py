"""Bit matrices for OT extension: rows of bits packed into bytes, least significant bit
first (bit ``j`` of a row is bit ``j % 8`` of byte ``j // 8``), and their transpose.

The transpose works on 8 x 8 bit tiles held in one 64-bit word each (three masked
delta-swaps, Hacker's Delight 7-3), so a 512 x 1,000,000 matrix takes a few numpy passes
instead of unpacking 512 million bits.
"""

from __future__ import annotations

import numpy as np

from ..errors import InternalError

_SWAPS = tuple((np.uint64(s), np.uint64(m)) for s, m in (
    (7, 0x00AA00AA00AA00AA), (14, 0x0000CCCC0000CCCC), (28, 0x00000000F0F0F0F0)))


def transpose(bits: np.ndarray, words: int = 1 << 15) -> np.ndarray:
    """The transpose of an (R, C/8) uint8 bit matrix (R rows of C bits) as a (C, R/8) one.

    ``R`` must be a multiple of 8 (pad the rows first). Works on about ``words`` tiles at
    a time, so that every pass stays in the processor's cache."""
    if bits.dtype != np.uint8 or bits.ndim != 2 or bits.shape[0] % 8:
        raise InternalError(f"transpose expects (8k, n) uint8 bits, got {bits.dtype} "
                            f"{bits.shape}")
    rows, cols = bits.shape
    out = np.empty((cols, 8, rows // 8), np.uint8)
    tiles = bits.reshape(rows // 8, 8, cols)
    step_c = max(1, min(cols, words // max(1, rows // 8)))
    step_r = max(1, words // step_c)
    for r0 in range(0, rows // 8, step_r):
        r1 = min(rows // 8, r0 + step_r)
        for c0 in range(0, cols, step_c):
            c1 = min(cols, c0 + step_c)
            # tile (c, r): rows 8r..8r+7 of byte column c, a byte per row: a little-endian word
            x = tiles[r0:r1, :, c0:c1].transpose(2, 0, 1).copy().view("<u8")[..., 0]
            for shift, mask in _SWAPS:  # bit 8i + k <-> bit 8k + i inside every word
                t = x >> shift
                t ^= x
                t &= mask
                x ^= t
                t <<= shift
                x ^= t
            # byte k of word (c, r) is now output row 8c + k, byte r
            out[c0:c1, :, r0:r1] = x[..., None].view(np.uint8).transpose(0, 2, 1)
    return out.reshape(cols * 8, rows // 8)


def pad_rows(bits: np.ndarray, multiple: int = 8) -> np.ndarray:
    """``bits`` with zero rows appended up to a multiple of ``multiple`` rows."""
    extra = -len(bits) % multiple
    if not extra:
        return bits
    return np.concatenate([bits, np.zeros((extra, bits.shape[1]), np.uint8)])
