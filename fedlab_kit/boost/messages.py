"""Wire messages of SecureBoost (msgpack via msgspec; bit masks and payloads as raw bytes).

Kinds (A = active label holder, P = passive feature holder):

- training: ``setup`` A->P, ``hello`` P->A, then per tree and level ``hist`` A->P,
  ``hist_reply`` P->A, ``split`` A->P, ``split_reply`` P->A; per tree ``tree`` A->P
  (and ``eval_reply`` P->A with an eval set); ``finish`` A->P.
- prediction: ``predict_hello`` P->A, then per batch of rows ``predict`` A->P and
  ``predict_reply`` P->A.
- stopping is the driver's (``core/abort``, see :mod:`fedlab_kit.net.driver`).
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from ..errors import ProtocolError
from ..protocol import Codec, Envelope

VERSION = 1
PREFIX = "boost/"


class Setup(msgspec.Struct, array_like=True):
    """What the feature holders agree to serve: at most ``n_trees`` trees of ``max_depth``,
    and no child of fewer than ``min_child_rows`` rows (each also applies its own floor)."""

    version: int
    model_id: str
    passives: list[str]
    max_bin: int
    secure: bool
    crypto: bytes
    max_depth: int
    n_trees: int
    min_child_rows: int


class Hello(msgspec.Struct, array_like=True):
    """``min_child_rows``: the floor this feature holder enforces (its own or the setup's);
    ``candidates``: its candidate (feature, threshold) columns, which the label holder
    learns from the first histograms anyway (a layout hint: 0 if unknown)."""

    version: int
    model_id: str
    n_rows: int
    columns: list[str]
    n_eval: list[int]
    min_child_rows: int
    candidates: int = 0


class Partition(msgspec.Struct, array_like=True):
    """A split of the previous level: rows of ``node`` whose bit is set go to ``left``.
    ``mask`` is empty for the party that owns the split (it knows it already)."""

    node: int
    left: int
    right: int
    mask: bytes


class HistRequest(msgspec.Struct, array_like=True):
    """``nodes``: histograms wanted; ``derived``: their siblings, whose histograms the label
    holder derives (parent minus sibling). ``sample`` (first level of a tree only): the rows
    this tree learns from, as bits; empty for every row."""

    tree: int
    depth: int
    partitions: list[Partition]
    nodes: list[int]
    derived: list[int]
    features: list[int]
    crypto: bytes
    sample: bytes = b""


class HistReply(msgspec.Struct, array_like=True):
    """``usable``: bits (nodes then derived, features, slots): the candidate split leaves at
    least ``min_child_rows`` rows on each side (only those may be asked for)."""

    tree: int
    depth: int
    crypto: bytes
    usable: bytes


class Choice(msgspec.Struct, array_like=True):
    node: int
    feature: int
    slot: int
    default_left: bool


class SplitRequest(msgspec.Struct, array_like=True):
    tree: int
    depth: int
    splits: list[Choice]


class SplitReply(msgspec.Struct, array_like=True):
    tree: int
    depth: int
    records: list[int]
    masks: list[bytes]


class TreeNode(msgspec.Struct, array_like=True):
    """A node as a passive party sees it: ``record`` is its own split record, -1 for a
    split of another party or a leaf (``left == right == -1``)."""

    id: int
    left: int
    right: int
    record: int


class TreeMsg(msgspec.Struct, array_like=True):
    tree: int
    nodes: list[TreeNode]


class EvalReply(msgspec.Struct, array_like=True):
    tree: int
    masks: bytes


class Finish(msgspec.Struct, array_like=True):
    n_trees: int


class PredictHello(msgspec.Struct, array_like=True):
    version: int
    model_id: str
    n_rows: int
    n_trees: int


class PredictRequest(msgspec.Struct, array_like=True):
    batch: int
    start: int
    stop: int
    last: bool


class PredictReply(msgspec.Struct, array_like=True):
    batch: int
    masks: bytes


CODEC = Codec("boost", {
    "setup": Setup, "hello": Hello, "hist": HistRequest, "hist_reply": HistReply,
    "split": SplitRequest, "split_reply": SplitReply, "tree": TreeMsg,
    "eval_reply": EvalReply, "finish": Finish, "predict_hello": PredictHello,
    "predict": PredictRequest, "predict_reply": PredictReply,
})


def kind(msg: msgspec.Struct) -> str:
    return CODEC.kind(msg)


def encode(msg: msgspec.Struct) -> bytes:
    return CODEC.encode(msg)


def decode(env: Envelope) -> Any:
    """The message in ``env``, typed by its kind; malformed ones raise ProtocolError."""
    return CODEC.decode(env)


def bits(mask: np.ndarray) -> bytes:
    """A boolean array (any shape) as packed bits, row-major."""
    return np.packbits(np.asarray(mask, dtype=bool).ravel()).tobytes()


def unbits(data: bytes, shape: tuple[int, ...], peer: str) -> np.ndarray:
    """Inverse of :func:`bits`; a length that does not fit ``shape`` is a ProtocolError."""
    n = int(np.prod(shape))
    if len(data) != (n + 7) // 8:
        raise ProtocolError(f"SecureBoost: {peer!r} sent a mask of {len(data)} bytes for "
                            f"{n} bits")
    return np.unpackbits(np.frombuffer(data, np.uint8), count=n).astype(bool).reshape(shape)
