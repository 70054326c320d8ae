"""CKKS homomorphic encryption on raw SEAL (``tenseal.sealapi``): keys, encoding, bytes.

The key owner (:class:`SecretContext`) decrypts; everyone else gets a :class:`PublicContext`
(public key and only the rotation keys a computation needs, never the secret key). TenSEAL's
high-level vectors re-encode plaintexts on every call, so hot paths use SEAL directly.

SEAL objects go to and from bytes through :mod:`.serial`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import msgspec
import numpy as np
import tenseal.sealapi as seal

from ..errors import InputError, ProtocolError
from .serial import from_bytes, to_bytes

POLY_DEGREE = 8192
SLOTS = POLY_DEGREE // 2
SCALE = 2.0**40
#: coefficient modulus per multiplicative depth; at N=8192, 128-bit security allows 218 bits
_CHAINS = {1: [60, 40, 60], 2: [60, 40, 40, 60]}

_to_bytes, _from_bytes = to_bytes, from_bytes


class _Bundle(msgspec.Struct, array_like=True):
    depth: int
    public_key: bytes
    galois_keys: bytes
    rotations: list[int]


def _context(depth: int) -> seal.SEALContext:
    if depth not in _CHAINS:
        raise InputError(f"CKKS depth must be one of {sorted(_CHAINS)}, got {depth}")
    params = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    params.set_poly_modulus_degree(POLY_DEGREE)
    params.set_coeff_modulus(seal.CoeffModulus.Create(POLY_DEGREE, _CHAINS[depth]))
    return seal.SEALContext(params, True, seal.SEC_LEVEL_TYPE.TC128)


class PublicContext:
    """What an evaluating party holds: encrypt, add, multiply by plaintexts, rotate."""

    def __init__(self, depth: int, context: seal.SEALContext, public_key: seal.PublicKey,
                 galois_keys: seal.GaloisKeys | None, rotations: Sequence[int]) -> None:
        self.depth = depth
        self.context = context
        self.public_key = public_key
        self.galois_keys = galois_keys
        self.rotations = sorted(set(rotations))
        self.encoder = seal.CKKSEncoder(context)
        self.evaluator = seal.Evaluator(context)
        self.encryptor = seal.Encryptor(context, public_key)

    # ------------------------------------------------------------------ bytes
    def to_bytes(self) -> bytes:
        """Public key, rotation keys and depth: everything a peer needs to evaluate."""
        gk = _to_bytes(self.galois_keys) if self.galois_keys is not None else b""
        return msgspec.msgpack.encode(
            _Bundle(self.depth, _to_bytes(self.public_key), gk, self.rotations))

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> PublicContext:
        try:
            b = msgspec.msgpack.decode(data, type=_Bundle)
        except msgspec.DecodeError as exc:
            raise ProtocolError("invalid CKKS public context from peer") from exc
        if b.depth not in _CHAINS:
            raise ProtocolError(f"CKKS public context from peer has depth {b.depth}; this kit "
                                f"uses {sorted(_CHAINS)}")
        context = _context(b.depth)
        pk = _from_bytes(seal.PublicKey(), b.public_key, context)
        gk = _from_bytes(seal.GaloisKeys(), b.galois_keys, context) if b.galois_keys else None
        return cls(b.depth, context, pk, gk, b.rotations)

    def dump(self, cts: Iterable[seal.Ciphertext]) -> bytes:
        """Ciphertexts as one blob (msgpack list of SEAL serialisations)."""
        return msgspec.msgpack.encode([_to_bytes(c) for c in cts])

    def load(self, data: bytes | memoryview, *, expect: int | None = None) -> list[seal.Ciphertext]:
        """Ciphertexts from :meth:`dump`; ``expect`` checks how many there are."""
        try:
            parts = msgspec.msgpack.decode(data, type=list[bytes])
        except msgspec.DecodeError as exc:
            raise ProtocolError("invalid ciphertext list from peer") from exc
        if expect is not None and len(parts) != expect:
            raise ProtocolError(f"expected {expect} ciphertexts from peer, got {len(parts)}")
        return [_from_bytes(seal.Ciphertext(), p, self.context) for p in parts]

    # ------------------------------------------------------------------ ops
    def encode(self, values: np.ndarray, like: seal.Ciphertext | None = None,
               scale: float = SCALE) -> seal.Plaintext:
        """A plaintext of ``values`` (real or complex, at most ``SLOTS``) at ``like``'s level."""
        pt = seal.Plaintext()
        pid = like.parms_id() if like is not None else self.context.first_parms_id()
        self.encoder.encode(np.asarray(values).tolist(), pid, scale, pt)
        return pt

    def encrypt(self, values: np.ndarray) -> seal.Ciphertext:
        ct = seal.Ciphertext()
        self.encryptor.encrypt(self.encode(values), ct)
        return ct

    def rerandomise(self, ct: seal.Ciphertext) -> None:
        """Add a fresh encryption of zero, so the result's randomness is not the evaluator's."""
        zero = seal.Ciphertext()
        self.encryptor.encrypt_zero(ct.parms_id(), zero)
        zero.scale = ct.scale
        self.evaluator.add_inplace(ct, zero)

    def add_plain(self, ct: seal.Ciphertext, values: np.ndarray) -> None:
        """``ct += values`` (e.g. DP noise), encoded at ``ct``'s level and scale."""
        self.evaluator.add_plain_inplace(ct, self.encode(values, like=ct, scale=ct.scale))

    def rotate_sum(self, ct: seal.Ciphertext, steps: Iterable[int]) -> None:
        """``ct += rot(ct, s)`` for each step: with steps w, 2w, ... SLOTS/2 every slot ends
        up holding the sum over its residue class modulo ``w``."""
        if self.galois_keys is None:
            raise InputError("this context has no rotation keys")
        rotated = seal.Ciphertext()
        for s in steps:
            if s not in self.rotations:
                raise InputError(f"no rotation key for step {s} (have {self.rotations})")
            self.evaluator.rotate_vector(ct, s, self.galois_keys, rotated)
            self.evaluator.add_inplace(ct, rotated)

    def digest(self) -> str:
        """A short fingerprint of the public key (for logs and worker caches)."""
        return hashlib.sha256(_to_bytes(self.public_key)).hexdigest()[:16]


class SecretContext(PublicContext):
    """The key owner's context: everything public plus the secret key (never sent)."""

    def __init__(self, depth: int = 2, rotations: Iterable[int] = ()) -> None:
        context = _context(depth)
        keygen = seal.KeyGenerator(context)
        pk = seal.PublicKey()
        keygen.create_public_key(pk)
        steps = sorted(set(rotations))
        gk = None
        if steps:
            gk = seal.GaloisKeys()
            elts = context.key_context_data().galois_tool().get_elts_from_steps(steps)
            keygen.create_galois_keys(elts, gk)
        super().__init__(depth, context, pk, gk, steps)
        self._decryptor = seal.Decryptor(context, keygen.secret_key())
        self._symmetric = seal.Encryptor(context, pk)
        self._symmetric.set_secret_key(keygen.secret_key())
        self._secret_bytes = _to_bytes(keygen.secret_key())

    def secret_key_bytes(self) -> bytes:
        """The secret key, for this party's own worker processes only (see :mod:`.pool`)."""
        return self._secret_bytes

    def encrypt_dump(self, vectors: Iterable[np.ndarray]) -> bytes:
        """Encrypt with the secret key and serialise, as :meth:`dump` of the ciphertexts.

        Secret-key encryption is as secure (RLWE) and about twice as fast, and SEAL then
        saves the random half of each ciphertext as a seed: half the bytes on the wire.
        """
        return msgspec.msgpack.encode(
            [_to_bytes(self._symmetric.encrypt_symmetric(self.encode(v))) for v in vectors])

    def public(self) -> PublicContext:
        return PublicContext.from_bytes(self.to_bytes())

    def decrypt(self, ct: seal.Ciphertext, *, complex_values: bool = False) -> np.ndarray:
        pt = seal.Plaintext()
        self._decryptor.decrypt(ct, pt)
        if complex_values:
            return np.asarray(self.encoder.decode_complex(pt))
        return np.asarray(self.encoder.decode_double(pt))


class SymmetricEncryptor:
    """Secret-key encryption in a key owner's worker process (built from key bytes)."""

    def __init__(self, depth: int, secret_key: bytes) -> None:
        self.context = _context(depth)
        sk = _from_bytes(seal.SecretKey(), secret_key, self.context, own=True)
        self.encoder = seal.CKKSEncoder(self.context)
        self.encryptor = seal.Encryptor(self.context, sk)

    def encrypt_bytes(self, values: np.ndarray) -> bytes:
        pt = seal.Plaintext()
        self.encoder.encode(np.asarray(values).tolist(), self.context.first_parms_id(), SCALE,
                            pt)
        return _to_bytes(self.encryptor.encrypt_symmetric(pt))


def power_of_two_steps(width: int, slots: int = SLOTS) -> list[int]:
    """Rotation steps ``width, 2*width, ..., slots/2`` that fold rows of ``width`` slots."""
    if width <= 0 or width & (width - 1) or width > slots:
        raise InputError(f"row width must be a power of two <= {slots}, got {width}")
    steps, s = [], width
    while s < slots:
        steps.append(s)
        s *= 2
    return steps
