"""Wire messages of vertical logistic regression (msgpack via msgspec; ciphertexts and
integer arrays in the raw tail of a message).

Kinds (L = label holder, F = feature holder; "all" = every other party):

- training: ``setup`` L->F; ``hello`` every party -> every other (its public key, the
  pairwise seed for a peer later in name order); per iteration ``contrib`` contributor ->
  all, ``product`` evaluator -> contributor, ``sums`` contributor -> evaluator,
  ``scalars`` F->L and ``step`` L->F.
- prediction: ``predict`` L->F, ``logits`` F->L.
- stopping is the driver's (``core/abort``, see :mod:`fedlab_kit.net.driver`).
"""

from __future__ import annotations

import msgspec

from ..protocol import Codec

VERSION = 1


class Setup(msgspec.Struct, array_like=True):
    """The run: parties (label holder first), rows, the optimiser's settings, whether the
    inner products are encrypted."""

    version: int
    model_id: str
    parties: list[str]
    n_rows: int
    max_iter: int
    tol: float
    l2: float
    secure: bool


class Hello(msgspec.Struct, array_like=True):
    """``seed``: the pairwise mask seed, sent by the party earlier in name order."""

    version: int
    model_id: str
    n_rows: int
    n_columns: int
    public_key: bytes
    seed: bytes


class Contrib(msgspec.Struct, array_like=True):
    """One contribution vector (tail: ciphertexts, or int64 values in plaintext runs)."""

    round: int


class Product(msgspec.Struct, array_like=True):
    """An evaluator's masked inner products with a contribution (tail: ciphertexts, or
    int64 sums in plaintext runs)."""

    round: int


class Sums(msgspec.Struct, array_like=True):
    """The decrypted (still masked) inner products (tail: uint64 values mod 2^52)."""

    round: int


class Scalars(msgspec.Struct, array_like=True):
    """Masked partial sums of the optimiser's scalars (16 bytes each)."""

    round: int
    values: list[bytes]


class Step(msgspec.Struct, array_like=True):
    """The optimiser's step for everyone: ``alpha`` along the direction, ``beta`` for the
    next direction, ``scale`` for the next contribution; ``stop``: training ends here."""

    round: int
    alpha: float
    beta: float
    scale: float
    stop: bool


class PredictRequest(msgspec.Struct, array_like=True):
    version: int
    model_id: str
    n_rows: int
    nonce: bytes


class Logits(msgspec.Struct, array_like=True):
    """A feature holder's masked logits (tail: uint64 fixed point mod 2^64)."""

    model_id: str


CODEC = Codec("linear", {
    "setup": Setup, "hello": Hello, "contrib": Contrib, "product": Product, "sums": Sums,
    "scalars": Scalars, "step": Step, "predict": PredictRequest, "logits": Logits,
})
