"""Histogram backends: how gradients travel to feature holders and histograms come back.

The label holder (active) turns gradients into a payload, each feature holder (passive)
turns that payload plus its own bin codes into a histogram payload, and the active reads
the histogram sums out of it. :class:`PlaintextActive`/:class:`PlaintextPassive` send
everything in the clear (tests, benchmarks); the encrypted backends live in
:mod:`fedlab_kit.boost.bfv` and are chosen by :func:`make_backends`.

Histograms are *cumulative* per candidate slot: entry ``[node, f, s]`` holds the sums of
(g, h) over the node's rows whose code of feature f is at most ``thresholds[f, s]`` and not
missing (zero for a slot whose threshold is -1).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np

from ..errors import ProtocolError
from .binning import MISSING
from .errors import BoostError


class InsecurePlaintextWarning(UserWarning):
    """Gradients and histograms are about to travel unencrypted."""


class ActiveBackend(Protocol):
    """The label holder's side. An optional attribute ``tolerance`` (float, default 0)
    bounds the absolute error of decrypted sums: hessian sums within it count as empty. It
    is read after each :meth:`encrypt_nodes`, which may update it for that request."""

    def setup_payload(self) -> bytes:
        """Sent once to every passive party (public keys, parameters)."""
        ...

    def encrypt_nodes(self, g: np.ndarray, h: np.ndarray, nodes: list[np.ndarray],
                      columns: int = 0) -> bytes:
        """The gradients of the rows of ``nodes`` (int64 row indices), for the passives;
        ``columns`` is the most candidate columns any passive may have (a layout hint)."""
        ...

    def decrypt_histograms(self, payload: bytes, n_nodes: int, n_features: int,
                           n_slots: int) -> np.ndarray:
        """float64 (n_nodes, n_features, n_slots, 2): [..., 0] G sums, [..., 1] H sums."""
        ...


class PassiveBackend(Protocol):
    """A feature holder's side, built from the active's setup payload."""

    def histograms(self, payload: bytes, nodes: list[np.ndarray], codes: np.ndarray,
                   thresholds: np.ndarray) -> bytes:
        """Cumulative histogram payload; ``codes`` (n_rows, F) uint8 (255 = missing),
        ``thresholds`` (F, n_slots) int16 (-1 = empty slot)."""
        ...


def histogram_sums(gh: np.ndarray, sizes: Sequence[int], codes: np.ndarray,
                   thresholds: np.ndarray) -> np.ndarray:
    """Cumulative (G, H) sums (len(sizes), F, n_slots, 2), vectorised.

    ``gh`` (m, 2) are the gradients of the concatenated node rows, ``codes`` (m, F) their
    bin codes, ``sizes`` the row count of each node in order.
    """
    n_nodes, (m, n_feat), n_slots = len(sizes), codes.shape, thresholds.shape[1]
    out = np.zeros((n_nodes, n_feat, n_slots, 2))
    if n_nodes == 0 or n_feat == 0 or m == 0:
        return out
    node = np.repeat(np.arange(n_nodes), sizes)
    idx = (((node * n_feat)[:, None] + np.arange(n_feat)) * 256 + codes).ravel()
    hist = np.empty((n_nodes, n_feat, 256, 2))
    for k in range(2):
        hist[..., k] = np.bincount(idx, weights=np.repeat(gh[:, k], n_feat),
                                   minlength=n_nodes * n_feat * 256
                                   ).reshape(n_nodes, n_feat, 256)
    cum = np.cumsum(hist[:, :, :MISSING], axis=2)
    thr = thresholds.astype(np.intp)
    valid = thr >= 0
    out[:] = cum[:, np.arange(n_feat)[:, None], np.where(valid, thr, 0)]
    out[:, ~valid] = 0.0
    return out


def node_histograms(g: np.ndarray, h: np.ndarray, nodes: list[np.ndarray], codes: np.ndarray,
                    thresholds: np.ndarray) -> np.ndarray:
    """:func:`histogram_sums` for nodes given as row-index arrays into ``g``, ``h``, ``codes``."""
    rows = np.concatenate(nodes) if nodes else np.zeros(0, np.int64)
    return histogram_sums(np.stack([g[rows], h[rows]], axis=1), [len(r) for r in nodes],
                          codes[rows], thresholds)


PLAINTEXT_SETUP = b"fedlab-boost-plaintext-v1"


class PlaintextActive:
    """Sends the node rows' (g, h) as raw float64: the passives see every gradient."""

    tolerance = 0.0

    def setup_payload(self) -> bytes:
        return PLAINTEXT_SETUP

    def encrypt_nodes(self, g: np.ndarray, h: np.ndarray, nodes: list[np.ndarray],
                      columns: int = 0) -> bytes:
        rows = np.concatenate(nodes) if nodes else np.zeros(0, np.int64)
        return np.stack([g[rows], h[rows]], axis=1).astype("<f8").tobytes()

    def decrypt_histograms(self, payload: bytes, n_nodes: int, n_features: int,
                           n_slots: int) -> np.ndarray:
        want = n_nodes * n_features * n_slots * 2
        if len(payload) != 8 * want:
            raise ProtocolError(f"histogram payload has {len(payload)} bytes; expected "
                                f"{8 * want}")
        hist = np.frombuffer(payload, dtype="<f8").astype(np.float64)
        if not np.isfinite(hist).all():
            raise ProtocolError("histogram payload holds non-finite sums")
        return hist.reshape(n_nodes, n_features, n_slots, 2)


class PlaintextPassive:
    """Computes histograms from the plaintext gradients with numpy."""

    def __init__(self, setup_payload: bytes) -> None:
        if bytes(setup_payload) != PLAINTEXT_SETUP:
            raise ProtocolError("the active party's setup is not for the plaintext backend")

    def histograms(self, payload: bytes, nodes: list[np.ndarray], codes: np.ndarray,
                   thresholds: np.ndarray) -> bytes:
        m = sum(len(r) for r in nodes)
        if len(payload) != 16 * m:
            raise ProtocolError(f"gradient payload has {len(payload)} bytes for {m} rows")
        gh = np.frombuffer(payload, dtype="<f8").reshape(m, 2).astype(np.float64)
        rows = np.concatenate(nodes) if nodes else np.zeros(0, np.int64)
        hist = histogram_sums(gh, [len(r) for r in nodes], codes[rows], thresholds)
        return hist.astype("<f8").tobytes()


class Backends(NamedTuple):
    """Factories of the two sides of one backend."""

    active: Callable[[], ActiveBackend]
    passive: Callable[[bytes], PassiveBackend]
    secure: bool


def make_backends(insecure_plaintext: bool, workers: Any = None) -> Backends:
    """The BFV backends, or (only if asked explicitly) the plaintext ones, with a warning;
    BFV work runs on ``workers`` (a party's :class:`~fedlab_kit.compute.Workers`; default:
    this machine's processes)."""
    if insecure_plaintext is True:
        warnings.warn("SecureBoost with insecure_plaintext=True: gradients and histograms "
                      "travel UNENCRYPTED; every feature holder sees the label holder's "
                      "gradients (and so, nearly, its labels). Use only for tests and "
                      "benchmarks.", InsecurePlaintextWarning, stacklevel=2)
        return Backends(PlaintextActive, PlaintextPassive, False)
    if insecure_plaintext is not False:
        raise BoostError(f"insecure_plaintext must be True or False, got {insecure_plaintext!r}")
    try:
        from .bfv import BfvActive, BfvPassive
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.bfv":
            raise
        raise BoostError("the encrypted SecureBoost backend (fedlab_kit.boost.bfv) is not "
                         "installed") from None
    if workers is None:
        return Backends(BfvActive, BfvPassive, True)
    return Backends(functools.partial(BfvActive, workers=workers),
                    functools.partial(BfvPassive, workers=workers), True)


# top-level functions, so that the protocol driver can run them in a pool
def encrypt(backend: ActiveBackend, g: np.ndarray, h: np.ndarray,
            nodes: list[np.ndarray], columns: int = 0) -> bytes:
    return backend.encrypt_nodes(g, h, nodes, columns)


def decrypt_all(backend: ActiveBackend, payloads: list[bytes], n_nodes: int,
                n_features: list[int], n_slots: int) -> list[np.ndarray]:
    return [backend.decrypt_histograms(p, n_nodes, f, n_slots)
            for p, f in zip(payloads, n_features, strict=True)]


def passive_histograms(backend: PassiveBackend, payload: bytes, nodes: list[np.ndarray],
                       codes: np.ndarray, thresholds: np.ndarray) -> bytes:
    return backend.histograms(payload, nodes, codes, thresholds)
