"""The symmetric primitives of OT-extension PSI, all AES through ``cryptography`` (AES-NI)
over whole numpy arrays of 16-byte blocks, never one element at a time:

- :func:`prg`: AES-128-CTR keyed by a base-OT seed, read from any bit offset;
- :class:`Aes`: a fixed-key AES permutation (the key public, from the session tag);
- :func:`code_words`: the pseudorandom code of KKRT, 512 bits per (ID, hash index);
- :func:`cr_hash`: the correlation-robust hash of OPRF rows (512 bits -> ``nbytes``);
- :func:`id_digests`: 128-bit digests of the encoded IDs (two keyed SipHash-2-4 of pandas'
  vectorised hashing, keys from the session tag).

``cr_hash`` chains the row's four blocks with the Matyas-Meyer-Oseas step of a fixed-key
permutation, ``x <- z_k ^ pi(x) ^ x``, and ends with the tweakable correlation-robust hash
TMMO of Guo, Katz, Wang and Yu (IEEE S&P 2020), ``pi'(pi'(x) ^ tweak) ^ pi'(x)``, the bin
as tweak. In the random-permutation model a receiver that knows a row up to an unknown
offset of min-entropy ``e`` must guess the offset to predict the output (each of the
``2^e`` candidates is a separate chain of permutation queries).
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..errors import InternalError

BLOCK = 16
CODE_BYTES = 64  # 512-bit code words (KKRT needs at least 448)


def derive(tag: bytes, label: str, n: int = 16) -> bytes:
    """``n`` bytes for one purpose from the session tag."""
    return hashlib.blake2b(tag, digest_size=n, person=b"fedlab-kkrt", salt=label.encode()[:16]
                           .ljust(16, b"\0")).digest()


class Aes:
    """A fixed-key AES-128 permutation of (n, 16) uint8 arrays."""

    def __init__(self, key: bytes) -> None:
        self._enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()

    def __call__(self, blocks: np.ndarray) -> np.ndarray:
        blocks = np.ascontiguousarray(blocks, dtype=np.uint8)
        out = np.empty(blocks.size + BLOCK - 1, np.uint8)  # update_into's own slack
        n = self._enc.update_into(blocks.reshape(-1), out)
        return out[:n].reshape(blocks.shape)


def prg(seed: bytes, nbytes: int, offset: int = 0) -> np.ndarray:
    """Bytes ``offset .. offset + nbytes`` of the AES-128-CTR stream keyed by ``seed``
    (``offset`` a multiple of 16: another would reuse stream bytes)."""
    if offset % BLOCK:
        raise InternalError(f"PRG offset {offset} is not a whole number of AES blocks")
    counter = (offset // BLOCK).to_bytes(BLOCK, "big")
    enc = Cipher(algorithms.AES(seed), modes.CTR(counter)).encryptor()
    zeros = np.zeros(nbytes, np.uint8)
    out = np.empty(nbytes + BLOCK - 1, np.uint8)
    n = enc.update_into(zeros, out)
    return out[:n]


def code_words(aes: Aes, digests: np.ndarray, hash_index: np.ndarray | int) -> np.ndarray:
    """(n, 64) code words: block j of the word for (digest d, hash index i) is
    ``AES(d ^ (4 i + j))``. Distinct (d, i) give independent-looking words."""
    n = len(digests)
    idx = np.broadcast_to(np.asarray(hash_index, np.uint8), (n,))
    blocks = np.repeat(digests[:, None, :], 4, axis=1)  # (n, 4, 16)
    blocks[:, :, 0] ^= (4 * idx[:, None] + np.arange(4, dtype=np.uint8)[None, :])
    return aes(blocks.reshape(n * 4, BLOCK)).reshape(n, CODE_BYTES)


def cr_hash(chain: Aes, final: Aes, rows: np.ndarray, bins: np.ndarray, nbytes: int
            ) -> np.ndarray:
    """(n, nbytes): the hash of each 64-byte row, tweaked by its bin (see the module)."""
    rows = np.ascontiguousarray(rows, dtype=np.uint8).reshape(len(rows), 4, BLOCK)
    x = rows[:, 0].copy()
    for k in range(1, 4):
        y = chain(x)
        y ^= x
        y ^= rows[:, k]
        x = y
    y = final(x)
    tweak = np.zeros((len(rows), BLOCK), np.uint8)
    tweak[:, :8] = np.asarray(bins, "<u8").reshape(-1, 1).view(np.uint8)
    out = final(y ^ tweak)
    out ^= y
    return out[:, :nbytes]


def id_digests(keys: list[bytes], tag: bytes) -> np.ndarray:
    """(n, 16) uint8 digests of the encoded IDs under this session's keys."""
    from pandas.util import hash_array  # here: the workers never need pandas

    if not keys:
        return np.zeros((0, BLOCK), np.uint8)
    arr = np.empty(len(keys), object)
    arr[:] = keys
    halves = [hash_array(arr, hash_key=derive(tag, f"ids{i}", 8).hex(), categorize=False)
              for i in range(2)]
    return np.stack(halves, axis=1).astype("<u8").view(np.uint8).reshape(len(keys), BLOCK)


def bin_positions(aes: Aes, digests: np.ndarray, n_bins: int) -> np.ndarray:
    """(n, 3) int64: the three cuckoo bins of each digest, ``AES(d ^ (16 + i)) mod n_bins``."""
    n = len(digests)
    blocks = np.repeat(digests[:, None, :], 3, axis=1)
    blocks[:, :, 0] ^= np.arange(16, 19, dtype=np.uint8)[None, :]
    words = aes(blocks.reshape(n * 3, BLOCK)).reshape(n, 3, BLOCK)[:, :, :8]
    return (np.ascontiguousarray(words).view("<u8")[..., 0] % np.uint64(n_bins)).astype(
        np.int64)


__all__ = [
    "BLOCK",
    "CODE_BYTES",
    "Aes",
    "bin_positions",
    "code_words",
    "cr_hash",
    "derive",
    "id_digests",
    "prg",
]
