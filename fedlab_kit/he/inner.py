"""Encrypted inner products in BFV's coefficient encoding, with circuit privacy.

A key owner holds a vector ``c`` (one integer per row); an evaluator holds a plaintext matrix
``X`` (rows x columns) and wants ``X^T c`` without seeing ``c``, and the key owner must learn
nothing of ``X``. The key owner encrypts ``c`` in blocks of ``b`` rows as polynomials
``C(x) = sum_r c_r x^r``. The evaluator packs ``K`` columns of the same rows into one plaintext
``P(x) = sum_k sum_r X[r, k] x^(k b + b - 1 - r)``: in ``C * P`` the coefficient at
``k b + b - 1`` is exactly ``sum_r c_r X[r, k]`` (the other products of the block land on
other coefficients, and ``(K + 1) b <= N`` keeps the negacyclic wrap away). Adding the
products of every block gives ``K`` whole inner products in one ciphertext, with no rotation
and no key but the public one. (:class:`Layout` fixes ``b`` and ``K``.)

Before a result goes back, the evaluator adds a uniform polynomial mod ``t`` (so every
coefficient the key owner decrypts, the cross terms included, is uniform; the evaluator
keeps the mask's values at the target coefficients and subtracts them from the sums it gets
back) and floods the ciphertext (:meth:`~fedlab_kit.he.bfv.BfvPublic.flood`'s construction:
a fresh encryption of zero and uniform noise of ``q / (8 t)`` on ``c0``, statistical distance
at most ``2^(log2 N + 2 - B)`` for a noise budget ``B`` before flooding), then drops the last
data prime (a public function of the flooded ciphertext: a third fewer bytes).

Parameters :data:`~fedlab_kit.he.bfv.INNER`: N = 8192, data primes of 60, 60 and 38 bits and
a 60-bit special prime (218 bits, 128-bit security), ``t = 2^52``: every inner product is
exact while its absolute value stays below 2^51, which the caller guarantees by bounding
its values and the rows summed into one ciphertext (:meth:`Layout.max_rows`).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgspec
import numpy as np
import tenseal.sealapi as seal

from ..errors import InputError, ProtocolError
from .bfv import INNER, _header, _noise_ciphertext, seal_context
from .serial import from_bytes, to_bytes

N = INNER.poly_degree
T = 1 << INNER.plain_bits
MAX_WIDTH = 63  # columns per product: at least 128 rows per block


@dataclass(frozen=True)
class Layout:
    """``block`` rows per ciphertext, ``width`` columns per product."""

    block: int
    width: int

    @classmethod
    def for_columns(cls, columns: int) -> Layout:
        """The layout for evaluators with at most ``columns`` columns (fewer columns: longer
        blocks, so fewer ciphertexts)."""
        k = max(1, min(int(columns), MAX_WIDTH))
        return cls(N // (k + 1), k)

    def blocks(self, rows: int) -> int:
        return -(-rows // self.block)

    def groups(self, columns: int) -> int:
        return -(-columns // self.width)

    def targets(self) -> np.ndarray:
        """The coefficient of each column's inner product in a product ciphertext."""
        return np.arange(self.width) * self.block + self.block - 1

    @staticmethod
    def max_rows(x_bound: int, c_bound: int) -> int:
        """Most rows one ciphertext may sum while every inner product stays exact
        (``|X| <= x_bound``, ``|c| <= c_bound``)."""
        return (T // 2 - 1) // (x_bound * c_bound)


def _coefficients_plaintext(coeffs: np.ndarray) -> seal.Plaintext:
    """A plaintext with these coefficients (reduced mod t; N of them, zero-padded)."""
    data = np.zeros(N, dtype=np.uint64)
    c = np.asarray(coeffs, dtype=np.int64)
    data[: len(c)] = (c % T).astype(np.uint64)
    payload = struct.pack("<Q", N) + data.tobytes()
    body = struct.pack("<4Q", 0, 0, 0, 0) + struct.pack("<Qd", N, 1.0) + _header(len(payload))
    return from_bytes(seal.Plaintext(), _header(len(body) + len(payload)) + body + payload,
                      seal_context(INNER), own=True)


def pack_columns(X: np.ndarray, layout: Layout) -> np.ndarray:
    """The coefficients of the plaintext for ``X`` (at most ``block`` rows and ``width``
    columns of integers): ``X[r, k]`` at ``k b + b - 1 - r``."""
    rows, cols = X.shape
    if rows > layout.block or cols > layout.width:
        raise InputError(f"a block of {rows} x {cols} does not fit {layout}")
    out = np.zeros(N, dtype=np.int64)
    r = np.arange(rows)
    for k in range(cols):
        out[k * layout.block + layout.block - 1 - r] = X[:, k]
    return out


def _uniform_mod_t(n: int) -> np.ndarray:
    return np.frombuffer(os.urandom(8 * n), dtype=np.uint64) & np.uint64(T - 1)


class InnerKey:
    """The key owner: encrypts its vector, decrypts the (masked) inner products."""

    def __init__(self) -> None:
        ctx = seal_context(INNER)
        keygen = seal.KeyGenerator(ctx)
        pk = seal.PublicKey()
        keygen.create_public_key(pk)
        self._public = to_bytes(pk)
        self._encryptor = seal.Encryptor(ctx, keygen.secret_key())
        self._decryptor = seal.Decryptor(ctx, keygen.secret_key())

    def public_bytes(self) -> bytes:
        """The public key: what an evaluator needs (for the flooding)."""
        return self._public

    def encrypt(self, values: np.ndarray, layout: Layout) -> bytes:
        """``values`` (integers, one per row) in blocks of ``layout.block`` rows, secret-key
        encrypted (SEAL sends the random half as a seed)."""
        v = np.asarray(values, dtype=np.int64)
        cts = []
        for i in range(layout.blocks(len(v))):
            pt = _coefficients_plaintext(v[i * layout.block:(i + 1) * layout.block])
            cts.append(to_bytes(self._encryptor.encrypt_symmetric(pt)))
        return msgspec.msgpack.encode(cts)

    def decrypt(self, data: bytes | memoryview, layout: Layout, expect: int) -> np.ndarray:
        """(expect, width) uint64: the target coefficients of each product ciphertext."""
        cts = load_ciphertexts(data, expect)
        out = np.zeros((len(cts), layout.width), dtype=np.uint64)
        pt = seal.Plaintext()
        targets = layout.targets().tolist()
        for i, ct in enumerate(cts):
            self._decryptor.decrypt(ct, pt)
            count = pt.coeff_count()
            out[i] = [pt.data(j) if j < count else 0 for j in targets]
        return out

    def noise_budget(self, ct: seal.Ciphertext) -> int:
        """SEAL's invariant noise budget in bits (for tests)."""
        return int(self._decryptor.invariant_noise_budget(ct))


def load_ciphertexts(data: bytes | memoryview, expect: int | None = None, *,
                     fresh: bool = False) -> list[seal.Ciphertext]:
    """A peer's ciphertexts under :data:`INNER`; ``fresh``: each at the first level, in the
    form the key owner's encryption gives (a lower level would leave the flooding less
    room than its bound assumes)."""
    ctx = seal_context(INNER)
    try:
        parts = msgspec.msgpack.decode(data, type=list[bytes])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError("invalid ciphertext list from peer") from exc
    if expect is not None and len(parts) != expect:
        raise ProtocolError(f"expected {expect} ciphertexts from peer, got {len(parts)}")
    out = [from_bytes(seal.Ciphertext(), p, ctx) for p in parts]
    first = list(ctx.first_parms_id())
    for ct in out:
        if ct.size() != 2 or ct.is_ntt_form():
            raise ProtocolError("a ciphertext from peer is not a fresh-form BFV ciphertext")
        if fresh and list(ct.parms_id()) != first:
            raise ProtocolError("a ciphertext from peer is not at the first level of the "
                                "agreed parameters (mod-switched or from another context)")
    return out


class InnerEvaluator:
    """An evaluator of one key owner's ciphertexts (built from its public key)."""

    def __init__(self, public_key: bytes | memoryview) -> None:
        self.context = ctx = seal_context(INNER)
        pk = from_bytes(seal.PublicKey(), public_key, ctx)
        self._encryptor = seal.Encryptor(ctx, pk)
        self._evaluator = seal.Evaluator(ctx)

    def plaintext(self, coeffs: np.ndarray) -> seal.Plaintext:
        """Packed columns (:func:`pack_columns`, not all zero: SEAL refuses a product that
        is transparent) as an NTT-form plaintext for products."""
        pt = _coefficients_plaintext(coeffs)
        self._evaluator.transform_to_ntt_inplace(pt, self.context.first_parms_id())
        return pt

    def ntt(self, cts: Sequence[seal.Ciphertext]) -> list[seal.Ciphertext]:
        """``cts`` turned into NTT form in place (for :meth:`accumulate`)."""
        for ct in cts:
            self._evaluator.transform_to_ntt_inplace(ct)
        return list(cts)

    def accumulate(self, ntt: Sequence[seal.Ciphertext],
                   row: Sequence[seal.Plaintext | None]) -> seal.Ciphertext:
        """``sum_b ntt[b] * row[b]`` (None: a block without values), coefficient form."""
        if len(row) != len(ntt):
            raise InputError(f"{len(row)} plaintexts for {len(ntt)} ciphertexts")
        ev, acc, tmp = self._evaluator, None, seal.Ciphertext()
        for c, pt in zip(ntt, row, strict=True):
            if pt is None:
                continue
            ev.multiply_plain(c, pt, tmp)
            if acc is None:
                acc, tmp = tmp, seal.Ciphertext()
            else:
                ev.add_inplace(acc, tmp)
        if acc is None:  # nothing to sum: a fresh encryption of zero carries the mask
            acc = seal.Ciphertext()
            self._encryptor.encrypt_zero(acc)
        else:
            ev.transform_from_ntt_inplace(acc)
        return acc

    def release(self, acc: seal.Ciphertext) -> tuple[bytes, np.ndarray]:
        """Mask every coefficient (uniform mod t), flood, drop a prime: the bytes for the
        key owner and the mask (N values mod t)."""
        mask = _uniform_mod_t(N)
        self._evaluator.add_plain_inplace(acc, _coefficients_plaintext(mask.astype(np.int64)))
        self.flood(acc)
        self._evaluator.mod_switch_to_next_inplace(acc)
        return to_bytes(acc), mask

    def products(self, cts: Sequence[seal.Ciphertext],
                 plains: Iterable[Sequence[seal.Plaintext | None]]
                 ) -> tuple[bytes, np.ndarray]:
        """One released result per row of ``plains`` (one plaintext per block; rows may
        come from a generator, so that only one row's plaintexts are held at a time): the
        ciphertexts for the key owner and the (results, N) masks added."""
        ntt = self.ntt(cts)
        out, masks = [], []
        for row in plains:
            ct, mask = self.release(self.accumulate(ntt, row))
            out.append(ct)
            masks.append(mask)
        return msgspec.msgpack.encode(out), np.array(masks, dtype=np.uint64).reshape(-1, N)

    def flood(self, ct: seal.Ciphertext) -> None:
        """A fresh encryption of zero plus uniform noise of ``q / (8 t)`` on ``c0``."""
        zero = seal.Ciphertext()
        self._encryptor.encrypt_zero(ct.parms_id(), zero)
        self._evaluator.add_inplace(ct, zero)
        self._evaluator.add_inplace(ct, _noise_ciphertext(INNER, ct.parms_id()))
