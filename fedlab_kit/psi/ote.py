"""The OT-extension work of KKRT PSI on one slice of bins (run in worker processes: keep
this module's imports light). See :mod:`.kkrt` for the protocol around it.
"""

from __future__ import annotations

import numpy as np

from .bitmatrix import transpose
from .symmetric import CODE_BYTES, Aes, code_words, cr_hash, derive, prg

WIDTH = 8 * CODE_BYTES  # base OTs, code bits
SLICE = 1 << 16  # bins per OT-extension message (4 MiB of columns)


def receiver_slice(tag: bytes, zero: list[bytes], one: list[bytes], lo: int, hi: int,
                   digests: np.ndarray, hash_index: np.ndarray, where: np.ndarray,
                   nbytes: int) -> tuple[bytes, np.ndarray]:
    """The receiver's work for bins ``lo..hi``: the columns to send and the OPRF values of
    its IDs there (``digests`` / ``hash_index`` of the IDs in bins ``lo + where``)."""
    size = hi - lo
    rows = np.zeros((size, CODE_BYTES), np.uint8)  # an empty bin's code word: 0, no ID's
    rows[where] = code_words(Aes(derive(tag, "code")), digests, hash_index)
    cols = transpose(rows)  # (512, size / 8)
    t = np.stack([prg(s, size // 8, lo // 8) for s in zero])
    u = np.stack([prg(s, size // 8, lo // 8) for s in one])
    u ^= t
    u ^= cols
    t_rows = transpose(t)[where]
    values = cr_hash(Aes(derive(tag, "chain")), Aes(derive(tag, "final")), t_rows,
                     lo + where, nbytes)
    return u.tobytes(), values


def sender_slice(tag: bytes, chosen: list[bytes], choices: np.ndarray, columns: bytes,
                 lo: int, hi: int, digests: np.ndarray, hash_index: np.ndarray,
                 bins: np.ndarray, nbytes: int) -> np.ndarray:
    """The sender's OPRF values for its (ID, hash function) pairs in bins ``lo..hi``."""
    size = hi - lo
    u = np.frombuffer(columns, np.uint8).reshape(WIDTH, size // 8)
    q = np.stack([prg(s, size // 8, lo // 8) for s in chosen])
    q ^= u & (choices.astype(np.uint8) * np.uint8(0xFF))[:, None]
    q_rows = transpose(q)  # q_b = t_b ^ (C(r_b) & s)
    s_bytes = np.packbits(choices, bitorder="little")
    z = q_rows[bins - lo]
    z ^= code_words(Aes(derive(tag, "code")), digests, hash_index) & s_bytes
    return cr_hash(Aes(derive(tag, "chain")), Aes(derive(tag, "final")), z, bins, nbytes)
