"""Sans-IO two-party PSI from a batched oblivious PRF (Kolesnikov, Kumaresan, Rosulek,
Trieu, CCS 2016), semi-honest.

Roles: the *receiver* (the leader; it learns the intersection) and the *sender*.

1. Both send a :class:`Hello`; the session tag is both nonces. The receiver places its IDs
   by cuckoo hashing into ``1.27 n`` bins (:mod:`.cuckoo`) and sends the seed of the bin
   functions with the first base-OT message; the sender draws 512 choice bits ``s`` and
   answers the 512 base OTs (:mod:`.base_ot`): one seed per transfer.
2. OT extension with a pseudorandom code: for each slice of bins, the receiver sends the
   512 columns ``u_j = G(k_j^0) ^ G(k_j^1) ^ c_j`` (``c`` the code words of its IDs, one row
   per bin); the sender gets ``q_b = t_b ^ (C(r_b) & s)`` for every bin, and so the OPRF
   ``F_b(y) = H(b, q_b ^ (C(y) & s))``, which the receiver knows only at its own ID,
   ``H(b, t_b)``.
3. The sender evaluates, for each of its IDs and each hash function ``i``, ``F`` at
   ``(y, i)`` in bin ``h_i(y)``, truncated to ``40 + log2(n_receiver * 3 n_sender)`` bits,
   and sends one row of three values per ID, the rows in a random order (OS CSPRNG); the
   receiver matches. When the sender is a receiver of the result too, the receiver tells
   it which of its *rows* matched, in a random common order: naming the matched value
   would tell the sender which hash function placed each common ID, so which bins the
   receiver's other IDs cannot be in.

What each side learns (semi-honest, non-colluding): the sender learns the receiver's set
size (and the intersection, when it receives the result); the receiver learns the
intersection and the sender's set size; the relay learns the sizes of the messages, which
follow from the set sizes. A false match needs two truncated values to collide:
probability at most ``2^-40`` per run.
"""

from __future__ import annotations

import math
import os
from typing import Any

import msgspec
import numpy as np

from ..errors import InputError, InternalError, ProtocolError
from ..protocol import Action, Codec, Compute, Envelope, Protocol
from . import cuckoo
from .base_ot import POINT, OtReceiver, OtSender
from .ote import SLICE, WIDTH, receiver_slice, sender_slice
from .protocol import Hello, PsiOutcome, Reveal, random_permutation, repeats, roles, same_protocol
from .symmetric import Aes, bin_positions, id_digests

VERSION = 1
STATISTICAL = 40
ATTEMPTS = 8  # cuckoo seeds tried before giving up
CANARY = b"s:fedlab-kkrt-canary"


class Offer(msgspec.Struct, array_like=True):
    """Receiver -> sender: the base-OT sender's point, the cuckoo seed, and the receiver's
    digest of a fixed ID under this session's tag (``canary``): both sides must digest IDs
    alike, or nothing could ever match."""

    first: bytes
    seed: bytes
    bins: int
    canary: bytes


class Answer(msgspec.Struct, array_like=True):
    """Sender -> receiver: the base-OT receiver's points (raw data, 32 bytes each)."""

    count: int


class Columns(msgspec.Struct, array_like=True):
    """Receiver -> sender: one slice of the OT-extension columns (raw data)."""

    index: int


class Values(msgspec.Struct, array_like=True):
    """Sender -> receiver: ``count`` rows of three OPRF values, rows shuffled (raw data)."""

    count: int
    width: int


class Result(msgspec.Struct, array_like=True):
    """Receiver -> sender: the size, and the matched value positions if revealed."""

    size: int
    revealed: bool


CODEC = Codec("kkrt", {"hello": Hello, "offer": Offer, "answer": Answer,
                       "columns": Columns, "values": Values, "result": Result})


def value_bytes(n_receiver: int, n_sender: int) -> int:
    """Bytes of each compared OPRF value: 40 + log2(pairs compared) bits, at least 8."""
    pairs = max(1, n_receiver) * max(1, 3 * n_sender)
    return max(8, math.ceil((STATISTICAL + math.log2(pairs)) / 8))


def _slices(bins: int) -> list[tuple[int, int]]:
    if SLICE % 128:  # each slice starts on a 16-byte block of every column's PRG stream
        raise InternalError(f"KKRT slices must be a multiple of 128 bins, not {SLICE}")
    return [(b, min(bins, b + SLICE)) for b in range(0, bins, SLICE)]


# ------------------------------------------------------------------------ protocol
class KkrtProtocol(Protocol):
    """One party's side of KKRT PSI; both parties run it with the same parameters."""

    name, title = "kkrt", "PSI"

    def __init__(self, me: str, parties: list[str], keys: list[bytes], *,
                 leader: str | None = None, reveal: Reveal = "intersection",
                 receivers: list[str] | None = None, peer_limit: int | None = None) -> None:
        """``peer_limit``: the most IDs the peer may announce (its set size in the plan),
        which bounds the work it can ask for."""
        super().__init__()
        parties = sorted(parties)
        if me not in parties or len(parties) != 2:
            raise InputError(f"KKRT PSI runs between two parties including {me!r}, got "
                             f"{parties} (three parties: protocol='ecdh')")
        if reveal != "intersection":
            raise InputError("KKRT PSI reveals the intersection: its receiver always learns "
                             "which of its IDs matched. For the count only, use "
                             "protocol='ecdh' with reveal='cardinality'")
        receivers, leader = roles(parties, receivers, leader)
        self.me, self.leader, self.receivers = me, leader, receivers
        self.peer = next(p for p in parties if p != me)
        self.keys = keys
        self.peer_limit = peer_limit
        self.hello = Hello(VERSION, parties, leader, reveal, receivers, len(keys), 0,
                           os.urandom(16))  # no batches: slices of bins instead
        self.peer_hello: Hello | None = None
        self.tag = b""
        self._done_slices = 0
        self._ranges: list[tuple[int, int]] = []  # (first bin, end) of each slice
        # receiver
        self._ot_sender: OtSender | None = None
        self._table = np.zeros(0, np.int64)
        self._choice = np.zeros(0, np.int64)
        self._mine: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # slice -> (ids, values)
        # sender
        self._ot_receiver: OtReceiver | None = None
        self._chosen: list[bytes] = []
        self._bins = 0
        self._entries: np.ndarray = np.zeros(0, np.int64)  # (id * 3 + i) sorted by bin
        self._entry_bins: np.ndarray = np.zeros(0, np.int64)
        self._slice_starts: np.ndarray = np.zeros(1, np.int64)  # entries of each slice
        self._digests = np.zeros((0, 16), np.uint8)
        self._pending: set[int] = set()  # column slices received
        self._values: dict[int, np.ndarray] = {}
        self._row_ids: np.ndarray | None = None  # our ID index at each row of the values sent

    @property
    def receiver(self) -> bool:
        return self.me == self.leader

    def progress(self) -> tuple[int, int]:
        return (self._done_slices, len(self._ranges))

    def _nbytes(self) -> int:
        assert self.peer_hello is not None
        sizes = (self.hello.size, self.peer_hello.size)
        return value_bytes(*(sizes if self.receiver else sizes[::-1]))

    # ------------------------------------------------------------------ steps
    def start(self) -> list[Action]:
        return [CODEC.send(self.peer, self.hello)]

    def on_message(self, env: Envelope) -> list[Action]:
        if env.sender != self.peer:
            raise ProtocolError(f"PSI: message from {env.sender!r}, who is not the peer here")
        if self.done:
            raise ProtocolError(f"PSI: {env.kind!r} from {env.sender!r} after the run ended")
        same_protocol(env, CODEC.family)
        msg, data = CODEC.decode_with_data(env)
        if isinstance(msg, Hello):
            return self._on_hello(msg)
        if self.peer_hello is None:
            raise ProtocolError(f"PSI: {env.sender!r} sent {env.kind!r} before its hello")
        if self.receiver:
            if isinstance(msg, Answer):
                return self._on_answer(msg, data)
            if isinstance(msg, Values):
                return self._on_values(msg, data)
        else:
            if isinstance(msg, Offer):
                return self._on_offer(msg)
            if isinstance(msg, Columns):
                return self._on_columns(msg, data)
            if isinstance(msg, Result):
                return self._on_result(msg, data)
        raise ProtocolError(f"PSI: unexpected {env.kind!r} from {env.sender!r}")

    def _on_hello(self, hello: Hello) -> list[Action]:
        mine = self.hello
        if _terms(hello) != _terms(mine):
            raise ProtocolError(f"PSI parameters differ: {self.peer!r} runs {_terms(hello)}; "
                                f"this party runs {_terms(mine)}")
        if self.peer_hello is not None or hello.size < 0:
            raise ProtocolError(f"PSI: duplicate or invalid hello from {self.peer!r}")
        if self.peer_limit is not None and hello.size > self.peer_limit:
            raise ProtocolError(f"PSI: {self.peer!r} announces {hello.size} IDs, more than "
                                f"the {self.peer_limit} of its set in the plan")
        self.peer_hello = hello
        first, second = (mine, hello) if self.receiver else (hello, mine)
        self.tag = b"kkrt1|" + first.nonce + second.nonce
        if mine.size == 0 or hello.size == 0:  # nothing can match: no more messages
            self._finish(PsiOutcome(0, np.zeros(0, np.int64) if self._revealed() else None,
                                    self._sizes()))
            return []
        if self.receiver:
            return self._offer()
        choices = np.frombuffer(os.urandom(WIDTH), np.uint8) & 1
        self._ot_receiver = OtReceiver(self.tag, choices)
        self._digests = id_digests(self.keys, self.tag)
        return [CODEC.send(self.peer, Answer(WIDTH), self._ot_receiver.answer)]

    def _sizes(self) -> dict[str, int]:
        assert self.peer_hello is not None
        return {self.me: self.hello.size, self.peer: self.peer_hello.size}

    def _revealed(self) -> bool:
        return self.me in self.receivers

    # ---------------------------------------------------------------- receiver
    def _offer(self) -> list[Action]:
        digests = id_digests(self.keys, self.tag)
        bins = cuckoo.n_bins(len(self.keys))
        for _ in range(ATTEMPTS):
            seed = os.urandom(16)
            positions = bin_positions(Aes(seed), digests, bins)
            try:
                self._table, self._choice = cuckoo.place(positions, bins)
                break
            except cuckoo.CuckooFailed:
                continue
        else:  # pragma: no cover - probability below 2^-300
            raise ProtocolError("PSI: cuckoo hashing failed with every seed drawn")
        self._digests, self._bins, self._ranges = digests, bins, _slices(bins)
        self._ot_sender = OtSender(self.tag)
        return [CODEC.send(self.peer, Offer(self._ot_sender.first, seed, bins,
                                            _canary(self.tag)))]

    def _on_answer(self, msg: Answer, data: memoryview) -> list[Action]:
        if self._ot_sender is None or msg.count != WIDTH or self._mine:
            raise ProtocolError(f"PSI: unexpected base-OT answer from {self.peer!r}")
        zero, one = self._ot_sender.seeds(bytes(data), WIDTH)
        self._ot_sender = None
        nbytes = self._nbytes()
        out: list[Action] = []
        for k, (lo, hi) in enumerate(self._ranges):
            where = np.flatnonzero(self._table[lo:hi] >= 0)
            ids = self._table[lo:hi][where]
            out.append(Compute(("slice", k, ids), receiver_slice,
                               (self.tag, zero, one, lo, hi, self._digests[ids],
                                self._choice[ids], where, nbytes)))
        return out

    def on_computed(self, key: Any, result: Any) -> list[Action]:
        if key[0] == "slice":  # receiver: a slice of columns is ready
            _, k, ids = key
            columns, values = result
            self._mine[k] = (ids, values)
            self._done_slices += 1
            return [CODEC.send(self.peer, Columns(k), columns)]
        _, k = key  # sender: the values of a slice
        self._values[k] = result
        self._done_slices += 1
        if len(self._values) < len(self._ranges):
            return []
        return self._send_values()

    def _on_values(self, msg: Values, data: memoryview) -> list[Action]:
        assert self.peer_hello is not None
        width = self._nbytes()
        if (msg.count != self.peer_hello.size or msg.width != width
                or len(data) != 3 * msg.count * width or len(self._mine) != len(self._ranges)):
            raise ProtocolError(f"PSI: {self.peer!r} sent {len(data)} bytes of values; "
                                f"expected {self.peer_hello.size} x 3 x {width}")
        theirs = np.frombuffer(data, np.uint8).reshape(3 * msg.count, width)
        ranked = sort_order(theirs)
        ids = np.concatenate([self._mine[k][0] for k in sorted(self._mine)])
        mine = np.concatenate([self._mine[k][1] for k in sorted(self._mine)])
        at_mine, at_ranked = match_rows(mine, theirs[ranked])
        order = random_permutation(len(at_mine))
        at_mine, rows = at_mine[order], ranked[at_ranked[order]] // 3  # the sender's rows
        size = len(at_mine)
        self._finish(PsiOutcome(size, ids[at_mine].astype(np.int64), self._sizes()))
        revealed = self.peer in self.receivers  # else not even the count goes out
        return [CODEC.send(self.peer, Result(size if revealed else -1, revealed),
                           rows.astype(">i8").tobytes() if revealed else b"")]

    # ------------------------------------------------------------------ sender
    def _on_offer(self, msg: Offer) -> list[Action]:
        assert self.peer_hello is not None and self._ot_receiver is not None
        if msg.bins != cuckoo.n_bins(self.peer_hello.size) or len(msg.seed) != 16 \
                or self._bins:
            raise ProtocolError(f"PSI: {self.peer!r} offered {msg.bins} bins for "
                                f"{self.peer_hello.size} IDs (or offered twice)")
        if len(msg.first) != POINT:
            raise ProtocolError(f"PSI: malformed base-OT message from {self.peer!r}")
        if msg.canary != _canary(self.tag):
            raise ProtocolError(f"PSI: {self.peer!r} digests IDs differently from this party "
                                "(different pandas hashing?): no ID could match. Install the "
                                "same fedlab-kit and pandas versions at both parties")
        self._chosen = self._ot_receiver.seeds(msg.first)
        self._bins, self._ranges = msg.bins, _slices(msg.bins)
        positions = bin_positions(Aes(msg.seed), self._digests, msg.bins).ravel()
        # grouped by slice (a radix sort of 16-bit slice numbers), any order inside one
        n = len(self._ranges)
        slices = (positions // SLICE).astype(np.uint16 if n < 1 << 16 else np.uint32)
        order = np.argsort(slices, kind="stable")
        self._entries, self._entry_bins = order, positions[order]
        self._slice_starts = np.searchsorted(slices[order], np.arange(n + 1))
        return []

    def _on_columns(self, msg: Columns, data: memoryview) -> list[Action]:
        if not self._bins or not 0 <= msg.index < len(self._ranges) \
                or msg.index in self._pending:
            raise ProtocolError(f"PSI: {self.peer!r} sent column slice {msg.index} out of "
                                "place")
        lo, hi = self._ranges[msg.index]
        if len(data) != WIDTH * (hi - lo) // 8:
            raise ProtocolError(f"PSI: column slice {msg.index} from {self.peer!r} has "
                                f"{len(data)} bytes; expected {WIDTH * (hi - lo) // 8}")
        a, b = self._slice_starts[msg.index], self._slice_starts[msg.index + 1]
        entries = self._entries[a:b]
        self._pending.add(msg.index)
        assert self._ot_receiver is not None
        return [Compute(("values", msg.index), sender_slice,
                        (self.tag, self._chosen, self._ot_receiver.choices, bytes(data), lo, hi,
                         self._digests[entries // 3], (entries % 3).astype(np.uint8),
                         self._entry_bins[a:b], self._nbytes()))]

    def _send_values(self) -> list[Action]:
        assert self.peer_hello is not None
        values = np.concatenate([self._values[k] for k in sorted(self._values)])
        n, width = self.hello.size, values.shape[1]
        table = np.empty((n, 3, width), np.uint8)  # entries are in slice order, as values
        table[self._entries // 3, self._entries % 3] = values
        self._row_ids = random_permutation(n)
        self._values = {}
        return [CODEC.send(self.peer, Values(n, width), table[self._row_ids].tobytes())]

    def _on_result(self, msg: Result, data: memoryview) -> list[Action]:
        if self._row_ids is None:
            raise ProtocolError(f"PSI: result from {self.peer!r} before the values went out")
        positions = None
        if msg.revealed != self._revealed():
            raise ProtocolError(f"PSI: {self.peer!r} sent a result that is "
                                f"{'' if msg.revealed else 'not '}revealed to this party, "
                                "against the agreed receivers")
        if not msg.revealed and (msg.size != -1 or len(data)):
            raise ProtocolError(f"PSI: {self.peer!r} sent a count to a party that is not a "
                                "receiver")
        if msg.revealed:
            if not 0 <= msg.size <= len(self._row_ids) or len(data) != 8 * msg.size:
                raise ProtocolError(f"PSI: malformed result from {self.peer!r}")
            at = np.frombuffer(data, ">i8").astype(np.int64)
            if at.size and (at.min() < 0 or at.max() >= len(self._row_ids)):
                raise ProtocolError(f"PSI: result from {self.peer!r} points outside our values")
            ids = self._row_ids[at]
            if repeats(np.sort(ids)):
                raise ProtocolError(f"PSI: result from {self.peer!r} names one ID twice")
            positions = ids
        self._finish(PsiOutcome(msg.size if self._revealed() else -1, positions,
                                self._sizes()))
        return []

    def _finish(self, outcome: PsiOutcome) -> None:
        self.done, self.result = True, outcome


def _canary(tag: bytes) -> bytes:
    return id_digests([CANARY], tag).tobytes()


def _terms(hello: Hello) -> str:
    return (f"KKRT version {hello.version}, parties {list(hello.parties)}, receiver (leader) "
            f"{hello.leader!r}, results to {list(hello.receivers)}")


def _prefixes(rows: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each row read big-endian (so integers sort as the bytes do), as
    native integers (sorting and searching non-native ones is several times slower)."""
    return np.ascontiguousarray(rows[:, :8]).view(">u8").ravel().astype(np.uint64)


def sort_order(rows: np.ndarray) -> np.ndarray:
    """The order that sorts ``rows`` (at least 8 bytes each) as byte strings."""
    prefix = _prefixes(rows)
    order = np.argsort(prefix)
    if repeats(prefix[order]):  # ~n^2 / 2^65: whole rows
        order = np.lexsort(rows.T[::-1])
    return order.astype(np.int64)


def match_rows(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into ``a``, into ``b``) of the rows equal in both, ``b`` sorted (see
    :func:`sort_order`): each row of ``a`` is looked up in ``b`` by its first 8 bytes and
    compared whole; should rows of ``b`` share those 8 bytes (probability ~n^2 / 2^65),
    the rows are matched whole instead."""
    if not len(a) or not len(b):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ka, kb = _prefixes(a), _prefixes(b)
    if repeats(kb):
        void = np.dtype((np.void, a.shape[1]))
        _, ia, ib = np.intersect1d(np.ascontiguousarray(a).view(void).ravel(),
                                   np.ascontiguousarray(b).view(void).ravel(),
                                   return_indices=True)
    else:
        order = np.argsort(ka)  # sorted needles: each search starts where the last ended
        at = np.minimum(np.searchsorted(kb, ka[order]), len(kb) - 1)
        hit = np.flatnonzero(kb[at] == ka[order])
        ia, ib = order[hit], at[hit]
    same = (a[ia] == b[ib]).all(axis=1)
    return ia[same].astype(np.int64), ib[same].astype(np.int64)
