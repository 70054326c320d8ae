"""BFV (exact integers mod ``t``) on raw SEAL: keys, slots, circuit privacy, input checks.

Two parameter sets (:class:`BfvParams`). :data:`COUNTS`, for joint counts: ring degree
N = 16384, five 60-bit primes (four data primes, q ~ 2^240, and one special prime for key
switching: 300 bits, within the 438 that 128-bit security allows at this N), plain modulus
``t`` a 30-bit prime = 1 mod 2N, so a ciphertext holds 16384 integers mod t (two rows of
8192 for rotations); counts are exact while every sum stays inside (-t/2, t/2), about
+-5e8. :data:`HISTOGRAMS`, for SecureBoost: N = 8192, primes of 60, 60, 38 (data) and 60
bits (218 bits, the most 128-bit security allows at N = 8192), ``t`` a 36-bit prime.

Circuit privacy (:meth:`BfvPublic.flood`): before a result goes back to the key holder, the
evaluator adds a fresh public-key encryption of zero (so the result's second component is
fresh) and adds to its first component a polynomial whose coefficients are uniform in
``[-2^b, 2^b)`` with ``2^b <= q / (8 t)``. Decryption stays exact, and the statistical
distance between what the key holder decrypts and a fresh encryption of the same output
with the same flooding is at most ``N * |v| / 2^(b+1)``, ``|v|`` the largest coefficient of
the evaluator's noise before flooding (:meth:`BfvParams.distance_log2`); ``tests/test_bfv.py``
and ``tests/test_boost_bfv.py`` measure it.

Self-destructing inputs (:func:`zero_one_check`, :meth:`BfvPublic.self_destruct`): for a
computation that expects 0/1 inputs, an evaluator computes ``T = sum_i r_i * x_i (x_i - 1)``
(fresh uniform ``r_i`` per slot) folded like the outputs, and adds ``rho * T`` (fresh uniform
nonzero ``rho`` per slot) to every output: 0 when every input is 0 or 1, and uniform
noise on every output slot that an invalid input could reach otherwise.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

import msgspec
import numpy as np
import tenseal.sealapi as seal

from ..errors import InputError, InternalError, ProtocolError
from .layout import power_of_two_steps
from .serial import from_bytes, to_bytes


@dataclass(frozen=True)
class BfvParams:
    """One BFV parameter set: ring degree, coefficient modulus bit sizes (the last prime is
    the key-switching one), plain modulus bits; ``batching``: the plain modulus is a prime
    = 1 mod 2N (slots), else it is ``2^plain_bits`` (coefficient encoding)."""

    name: str
    poly_degree: int
    coeff_bits: tuple[int, ...]
    plain_bits: int
    batching: bool = True

    @property
    def slots(self) -> int:
        return self.poly_degree

    @property
    def row(self) -> int:  # rotations act within each of the two rows
        return self.poly_degree // 2

    def distance_log2(self, budget: int) -> int:
        """log2 of the bound on the statistical distance of a flooded result whose noise
        budget (SEAL's, in bits) was ``budget`` before flooding: budget B means
        |v| ~ q / (t 2^(B+1)) and the flooding is >= q / (16 t), so N |v| / 2^(b+1) is at
        most 2^(log2 N + 2 - B). 2^-40 needs B >= log2 N + 42."""
        return self.poly_degree.bit_length() + 1 - budget


#: joint counts: exact 0/1 sums up to +-5e8, room for two multipliers, the input check and
#: the flooding
COUNTS = BfvParams("counts", 16384, (60, 60, 60, 60, 60), 30)
#: SecureBoost histograms: fixed-point gradient sums up to +-2^35, one plaintext product,
#: a fold and the flooding (on the two 60-bit data primes left after dropping the third)
HISTOGRAMS = BfvParams("histograms", 8192, (60, 60, 38, 60), 36)
#: vertical linear models: inner products of fixed-point vectors in coefficient encoding,
#: exact below 2^51 in absolute value (see :mod:`.inner`)
INNER = BfvParams("inner", 8192, (60, 60, 38, 60), 52, batching=False)
PARAMS = {p.name: p for p in (COUNTS, HISTOGRAMS, INNER)}

SLOTS = COUNTS.slots
ROW = COUNTS.row


@cache
def seal_context(params: BfvParams = COUNTS) -> seal.SEALContext:
    ep = seal.EncryptionParameters(seal.SCHEME_TYPE.BFV)
    ep.set_poly_modulus_degree(params.poly_degree)
    ep.set_coeff_modulus(seal.CoeffModulus.Create(params.poly_degree, list(params.coeff_bits)))
    if params.batching:
        ep.set_plain_modulus(seal.PlainModulus.Batching(params.poly_degree, params.plain_bits))
    else:
        ep.set_plain_modulus(seal.Modulus(1 << params.plain_bits))
    return seal.SEALContext(ep, True, seal.SEC_LEVEL_TYPE.TC128)


def plain_modulus(params: BfvParams = COUNTS) -> int:
    return int(seal_context(params).first_context_data().parms().plain_modulus().value())


def level_primes(params: BfvParams = COUNTS, parms_id: Sequence[int] | None = None
                 ) -> list[int]:
    """The data primes at ``parms_id`` (default: the first, fullest level)."""
    ctx = seal_context(params)
    data = ctx.get_context_data(parms_id) if parms_id is not None else ctx.first_context_data()
    return [int(m.value()) for m in data.parms().coeff_modulus()]


def flood_bits(params: BfvParams = COUNTS, parms_id: Sequence[int] | None = None) -> int:
    """``b``: flooding coefficients are uniform in ``[-2^b, 2^b)``, ``2^b <= q / (8 t)`` for
    the modulus ``q`` at ``parms_id``."""
    q = 1
    for p in level_primes(params, parms_id):
        q *= p
    return (q // (8 * plain_modulus(params))).bit_length() - 1


def uniform_below(n: int, bound: int) -> np.ndarray:
    """``n`` integers uniform in ``[0, bound)`` from the OS CSPRNG (rejection, no bias)."""
    if not 0 < bound < 2**62:
        raise InputError(f"bound must be in (0, 2^62), got {bound}")
    limit = (2**64 // bound) * bound
    out = np.zeros(0, dtype=np.uint64)
    while len(out) < n:
        draw = np.frombuffer(os.urandom(8 * (n - len(out) + 16)), dtype=np.uint64)
        out = np.concatenate([out, draw[draw < np.uint64(limit)] % np.uint64(bound)])
    return out[:n].astype(np.int64)


def fold_steps(width: int, params: BfvParams = COUNTS) -> list[int]:
    """Row rotations ``width, 2*width, ..., row/2``; with the column swap every slot ends
    up holding the sum over all slots congruent to it modulo ``width``."""
    return power_of_two_steps(width, params.row)


def _plaintext(encoder: seal.BatchEncoder, t: int, slots: int, values: np.ndarray
               ) -> seal.Plaintext:
    """Integers reduced mod ``t`` (at most ``slots``, zero-padded) as a batched plaintext."""
    vals = np.zeros(slots, dtype=np.int64)
    v = np.asarray(values, dtype=np.int64).ravel()
    vals[: len(v)] = v
    pt = seal.Plaintext()
    encoder.encode((vals % t).tolist(), pt)
    return pt


class _Bundle(msgspec.Struct, array_like=True):
    params: str
    public_key: bytes
    relin_keys: bytes
    galois_keys: bytes
    width: int


class BfvPublic:
    """What an evaluating party holds: encrypt, multiply by plaintexts, fold, flood."""

    def __init__(self, public_key: seal.PublicKey, relin_keys: seal.RelinKeys | None,
                 galois_keys: seal.GaloisKeys, width: int, params: BfvParams = COUNTS) -> None:
        self.params = params
        self.context = seal_context(params)
        self.slots = params.slots
        self.width = width
        self.steps = fold_steps(width, params)
        self.public_key, self.relin_keys, self.galois_keys = public_key, relin_keys, galois_keys
        self.encoder = seal.BatchEncoder(self.context)
        self.evaluator = seal.Evaluator(self.context)
        self.encryptor = seal.Encryptor(self.context, public_key)
        self.t = plain_modulus(params)

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> BfvPublic:
        try:
            b = msgspec.msgpack.decode(data, type=_Bundle)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProtocolError("invalid BFV public context from peer") from exc
        params = PARAMS.get(b.params)
        if params is None:
            raise ProtocolError(f"BFV public context from peer has unknown parameters "
                                f"{b.params!r}; this kit has {sorted(PARAMS)}")
        ctx = seal_context(params)
        try:
            fold_steps(b.width, params)
        except InputError as exc:
            raise ProtocolError(f"BFV public context from peer: {exc}") from exc
        pk = from_bytes(seal.PublicKey(), b.public_key, ctx)
        rk = from_bytes(seal.RelinKeys(), b.relin_keys, ctx) if b.relin_keys else None
        gk = from_bytes(seal.GaloisKeys(), b.galois_keys, ctx)
        return cls(pk, rk, gk, b.width, params)

    # ------------------------------------------------------------------ bytes
    def dump(self, cts: Iterable[seal.Ciphertext]) -> bytes:
        return msgspec.msgpack.encode([to_bytes(c) for c in cts])

    def load(self, data: bytes | memoryview, *, expect: int | None = None,
             fresh: bool = False) -> list[seal.Ciphertext]:
        """A peer's ciphertexts; ``fresh``: each must be at the first (fullest) level, as
        the key holder encrypts them (at a lower level the flooding has less room than the
        stated bound assumes)."""
        try:
            parts = msgspec.msgpack.decode(data, type=list[bytes])
        except msgspec.DecodeError as exc:
            raise ProtocolError("invalid ciphertext list from peer") from exc
        if expect is not None and len(parts) != expect:
            raise ProtocolError(f"expected {expect} ciphertexts from peer, got {len(parts)}")
        out = [from_bytes(seal.Ciphertext(), p, self.context) for p in parts]
        for ct in out:
            if ct.size() != 2 or ct.is_ntt_form():
                raise ProtocolError("a ciphertext from peer is not a fresh-form BFV ciphertext")
            if fresh and list(ct.parms_id()) != list(self.context.first_parms_id()):
                raise ProtocolError("a ciphertext from peer is not at the first level of the "
                                    "agreed parameters (mod-switched or from another context)")
        return out

    # ------------------------------------------------------------------ ops
    def encode(self, values: np.ndarray, ntt_like: seal.Ciphertext | None = None
               ) -> seal.Plaintext:
        """Integers (reduced mod t; at most ``slots``, zero-padded); in NTT form at
        ``ntt_like``'s level when given (for products with NTT-form ciphertexts)."""
        pt = _plaintext(self.encoder, self.t, self.slots, values)
        if ntt_like is not None:
            self.evaluator.transform_to_ntt_inplace(pt, ntt_like.parms_id())
        return pt

    def encode_bits(self, bits: np.ndarray, ntt_like: seal.Ciphertext) -> seal.Plaintext:
        """A 0/1 vector of exactly ``slots`` values (any integer dtype; not checked: masks
        the caller built), in NTT form at ``ntt_like``'s level: :meth:`encode` without its
        copies."""
        pt = seal.Plaintext()
        self.encoder.encode(bits.tolist(), pt)
        self.evaluator.transform_to_ntt_inplace(pt, ntt_like.parms_id())
        return pt

    def encrypt(self, values: np.ndarray) -> seal.Ciphertext:
        ct = seal.Ciphertext()
        self.encryptor.encrypt(self.encode(values), ct)
        return ct

    def multiply(self, ct: seal.Ciphertext, values: np.ndarray) -> seal.Ciphertext:
        """``ct * values`` slot by slot (an all-zero ``values`` gives a fresh zero: SEAL
        refuses transparent products)."""
        if not np.any(np.asarray(values) % self.t):
            return self.encrypt(np.zeros(self.slots, np.int64))
        out = seal.Ciphertext()
        self.evaluator.multiply_plain(ct, self.encode(values), out)
        return out

    def fold(self, ct: seal.Ciphertext, width: int | None = None) -> None:
        """Every slot := the sum over its residue class modulo ``width`` (in place; default
        the width the keys were made for; a wider power of two needs a subset of them)."""
        steps = self.steps if width is None else fold_steps(width, self.params)
        rotated = seal.Ciphertext()
        for s in steps:
            self.evaluator.rotate_rows(ct, s, self.galois_keys, rotated)
            self.evaluator.add_inplace(ct, rotated)
        self.evaluator.rotate_columns(ct, self.galois_keys, rotated)
        self.evaluator.add_inplace(ct, rotated)

    def sum_products(self, pairs: Iterable[tuple[seal.Ciphertext, seal.Plaintext]]
                     ) -> seal.Ciphertext | None:
        """``sum ct * pt`` over NTT-form pairs, back in coefficient form; ``None`` when
        there are no pairs."""
        ev, acc, tmp = self.evaluator, None, seal.Ciphertext()
        for ct, pt in pairs:
            ev.multiply_plain(ct, pt, tmp)
            if acc is None:
                acc, tmp = tmp, seal.Ciphertext()
            else:
                ev.add_inplace(acc, tmp)
        if acc is not None:
            ev.transform_from_ntt_inplace(acc)
        return acc

    def add_plain(self, ct: seal.Ciphertext, values: np.ndarray) -> None:
        self.evaluator.add_plain_inplace(ct, self.encode(values))

    def self_destruct(self, ct: seal.Ciphertext, check: seal.Ciphertext) -> None:
        """``ct += rho * check`` with fresh uniform nonzero ``rho`` per slot."""
        rho = uniform_below(self.slots, self.t - 1) + 1
        tmp = seal.Ciphertext()
        self.evaluator.multiply_plain(check, self.encode(rho), tmp)
        self.evaluator.add_inplace(ct, tmp)

    def flood(self, ct: seal.Ciphertext) -> None:
        """Re-randomise and flood ``ct`` before it goes back to the key holder (see the
        module docstring): a fresh encryption of zero, plus uniform noise on ``c0``."""
        zero = seal.Ciphertext()
        self.encryptor.encrypt_zero(ct.parms_id(), zero)
        self.evaluator.add_inplace(ct, zero)
        self.evaluator.add_inplace(ct, _noise_ciphertext(self.params, ct.parms_id()))


class BfvSecret(BfvPublic):
    """The key owner: everything public plus the secret key (never sent)."""

    def __init__(self, width: int, *, relin: bool = True, params: BfvParams = COUNTS) -> None:
        context = seal_context(params)
        keygen = seal.KeyGenerator(context)
        pk = seal.PublicKey()
        keygen.create_public_key(pk)
        steps = fold_steps(width, params)
        elts = context.key_context_data().galois_tool().get_elts_from_steps(steps)
        elts.append(2 * params.poly_degree - 1)  # the column swap
        # seeded (Serializable) keys: half the bytes on the wire
        self._gk_bytes = to_bytes(keygen.create_galois_keys(elts))
        self._rk_bytes = to_bytes(keygen.create_relin_keys()) if relin else b""
        gk = from_bytes(seal.GaloisKeys(), self._gk_bytes, context, own=True)
        rk = from_bytes(seal.RelinKeys(), self._rk_bytes, context, own=True) if relin else None
        super().__init__(pk, rk, gk, width, params)
        self._pk_bytes = to_bytes(pk)
        self._decryptor = seal.Decryptor(context, keygen.secret_key())
        self._symmetric = seal.Encryptor(context, pk)
        self._symmetric.set_secret_key(keygen.secret_key())
        self._secret_bytes = to_bytes(keygen.secret_key())

    def secret_key_bytes(self) -> bytes:
        """The secret key, for this party's own worker processes only (see :mod:`.pool`)."""
        return self._secret_bytes

    def to_bytes(self) -> bytes:
        """Public key, relinearisation and rotation keys: what the evaluators need."""
        return msgspec.msgpack.encode(_Bundle(self.params.name, self._pk_bytes, self._rk_bytes,
                                              self._gk_bytes, self.width))

    def encrypt_dump(self, vectors: Iterable[np.ndarray]) -> bytes:
        """Secret-key encryption (half the bytes: SEAL sends the random half as a seed)."""
        return msgspec.msgpack.encode(
            [to_bytes(self._symmetric.encrypt_symmetric(self.encode(v))) for v in vectors])

    def decrypt(self, ct: seal.Ciphertext) -> np.ndarray:
        """Slot values in ``(-t/2, t/2]`` as int64."""
        pt = seal.Plaintext()
        self._decryptor.decrypt(ct, pt)
        return np.asarray(self.encoder.decode_int64(pt), dtype=np.int64)

    def noise_budget(self, ct: seal.Ciphertext) -> int:
        """Bits of noise budget left (SEAL's invariant noise budget; for tests)."""
        return int(self._decryptor.invariant_noise_budget(ct))


class BfvSymmetric:
    """Secret-key encryption in a key owner's worker process (built from key bytes)."""

    def __init__(self, params_name: str, secret_key: bytes) -> None:
        self.params = PARAMS[params_name]
        self.context = seal_context(self.params)
        sk = from_bytes(seal.SecretKey(), secret_key, self.context, own=True)
        self.encoder = seal.BatchEncoder(self.context)
        self.encryptor = seal.Encryptor(self.context, sk)
        self.t = plain_modulus(self.params)

    def encrypt_bytes(self, values: np.ndarray) -> bytes:
        pt = _plaintext(self.encoder, self.t, self.params.slots, values)
        return to_bytes(self.encryptor.encrypt_symmetric(pt))


def zero_one_check(ctx: BfvPublic, cts: Sequence[seal.Ciphertext]) -> seal.Ciphertext:
    """``sum_i r_i * x_i * (x_i - 1)`` over the ciphertexts (fresh uniform ``r_i`` per
    slot), folded: zero in every slot iff every input slot of its class is 0 or 1."""
    if ctx.relin_keys is None:
        raise ProtocolError("the key holder sent no relinearisation keys for the input check")
    ev = ctx.evaluator
    ones = ctx.encode(np.ones(ctx.slots, np.int64))
    acc: seal.Ciphertext | None = None
    xm1, z = seal.Ciphertext(), seal.Ciphertext()
    for ct in cts:
        ev.sub_plain(ct, ones, xm1)
        ev.multiply(ct, xm1, z)
        ev.relinearize_inplace(z, ctx.relin_keys)
        ev.transform_to_ntt_inplace(z)
        ev.multiply_plain_inplace(z, ctx.encode(uniform_below(ctx.slots, ctx.t), ntt_like=z))
        if acc is None:
            acc, z = z, seal.Ciphertext()
        else:
            ev.add_inplace(acc, z)
    if acc is None:
        raise InputError("nothing to check: no ciphertexts")
    ev.transform_from_ntt_inplace(acc)
    ctx.fold(acc)
    return acc


# ---------------------------------------------------------------- flooding ciphertext

@cache
def _seal_version() -> bytes:
    """Magic, header size and version bytes of this SEAL build's serialisation header."""
    return to_bytes(seal.Plaintext())[:5]


def _header(size: int) -> bytes:
    return _seal_version() + b"\x00" + struct.pack("<HQ", 0, 16 + size)  # no compression


def flood_residues(primes: Sequence[int], b: int, n: int) -> np.ndarray:
    """(len(primes), n) residues of ``n`` integers uniform in ``[-2^b, 2^b)`` (CSPRNG).

    U uniform in ``[0, 2^(b+1))`` is drawn as limbs of ``w`` bits, so that a limb times a
    residue stays below 2^64; ``E = U - 2^b`` is reduced mod each prime exactly."""
    if max(primes) >= 2**60:
        raise InternalError("flooding expects data primes below 2^60")  # pragma: no cover
    w = min(32, 64 - max(primes).bit_length())
    if w < 8:  # 4-bit limbs: the nibbles of b + 1 random bits
        w, n_bytes = 4, -(-(b + 1) // 8)
        raw = np.frombuffer(os.urandom(n * n_bytes), dtype=np.uint8).reshape(n, n_bytes)
        limbs = np.empty((2 * n_bytes, n), dtype=np.uint64)
        limbs[0::2], limbs[1::2] = (raw & 15).T, (raw >> 4).T
    else:
        n_limbs = -(-(b + 1) // w)
        limbs = np.frombuffer(os.urandom(4 * n * n_limbs), dtype="<u4").reshape(n_limbs, n)
        limbs = limbs.astype(np.uint64) & np.uint64((1 << w) - 1)
    for j in range(len(limbs)):  # keep exactly the low b + 1 bits of U
        low = w * j
        if low >= b + 1:
            limbs[j] = 0
        elif low + w > b + 1:
            limbs[j] &= np.uint64((1 << (b + 1 - low)) - 1)
    out = np.zeros((len(primes), n), dtype=np.uint64)
    for i, q in enumerate(primes):
        qq = np.uint64(q)
        weights = np.array([pow(2, w * j, q) for j in range(len(limbs))], dtype=np.uint64)
        terms = (limbs * weights[:, None]) % qq  # each limb times 2^(w j), mod q
        while len(terms) > 1:  # pairwise sums, reduced at each step (no overflow)
            if len(terms) % 2:
                terms = np.vstack([terms, np.zeros((1, n), dtype=np.uint64)])
            terms = (terms[0::2] + terms[1::2]) % qq
        out[i] = (terms[0] + np.uint64(q - pow(2, b, q))) % qq
    return out


def _noise_ciphertext(params: BfvParams, parms_id: Sequence[int]) -> seal.Ciphertext:
    """The pair ``(E, 0)`` with ``E``'s coefficients uniform in ``[-2^b, 2^b)`` (CSPRNG),
    in SEAL's ciphertext format at ``parms_id`` (coefficient form)."""
    context = seal_context(params)
    primes = level_primes(params, parms_id)
    n = params.poly_degree
    data = np.zeros((2, len(primes), n), dtype=np.uint64)
    data[0] = flood_residues(primes, flood_bits(params, parms_id), n)
    payload = struct.pack("<Q", data.size) + data.tobytes()
    body = (struct.pack("<4Q", *parms_id) + b"\x00"
            + struct.pack("<QQQdQ", 2, n, len(primes), 1.0, 1)
            + _header(len(payload)) + payload)
    return from_bytes(seal.Ciphertext(), _header(len(body)) + body, context, own=True)
