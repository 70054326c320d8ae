"""Sans-IO ECDH-PSI for two or three parties (ring of X25519 exponentiations).

Every party hashes its IDs to points and multiplies them by its secret scalar. Each list
then travels around the ring of the other parties, each multiplying by its own scalar, and
arrives fully encrypted (by every scalar) at the *leader*, truncated to 12 bytes. Every
owner shuffles its list first (a permutation from the OS CSPRNG), so only it can map
positions back to rows. The leader
intersects the lists and tells each receiver which of its positions are in the intersection,
in one common order, so row i is the same customer at every party.

With ``reveal="cardinality"`` the last hop of the leader's own list shuffles it as a whole,
so the leader can count matches but not tell which of its rows matched; receivers get the
count only. Batches stream through the ring; the scalar multiplications are
:class:`~fedlab_kit.protocol.Compute` requests, run by the driver in a process pool.

What each party learns (semi-honest): everyone learns every party's set size; the leader
learns the intersection (or its size) and, with three parties, the number of IDs that the
two others share but it does not hold; receivers learn the intersection (or its size); no
one learns an ID outside the intersection. Equal truncated values have a false-positive
probability of at most n_a * n_b / 2**96 per pair of sets.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import numpy as np

from ..errors import InputError, ProtocolError
from ..protocol import Action, Codec, Compute, Envelope, Protocol
from .curve import POINT, InvalidPoint, hash_and_mul, mul_points, new_scalar

TRUNC = 12
BATCH = 4096
VERSION = 1
Reveal = Literal["intersection", "cardinality"]


def roles(parties: list[str], receivers: list[str] | None, leader: str | None
          ) -> tuple[list[str], str]:
    """The checked receivers (default: every party) and leader (default: the first)."""
    receivers = sorted(receivers or parties)
    if not set(receivers) <= set(parties):
        raise InputError(f"receivers {receivers} must be among the parties {parties}")
    leader = leader or receivers[0]
    if leader not in receivers:
        raise InputError(f"the leader {leader!r} must be a receiver (it sees the result)")
    return receivers, leader


class Hello(msgspec.Struct, array_like=True):
    version: int
    parties: list[str]
    leader: str
    reveal: str
    receivers: list[str]
    size: int
    batch: int
    nonce: bytes


class Points(msgspec.Struct, array_like=True):
    """A batch of points on its way round the ring (the points follow as raw bytes)."""

    owner: str
    hops: int  # scalars applied so far
    index: int


class Final(msgspec.Struct, array_like=True):
    """A batch of fully encrypted, truncated values for the leader."""

    owner: str
    hops: int
    index: int


class ResultHead(msgspec.Struct, array_like=True):
    size: int
    revealed: bool
    sizes: dict[str, int]


CODEC = Codec("psi", {"hello": Hello, "points": Points, "final": Final,
                      "result": ResultHead})


@dataclass
class PsiOutcome:
    """One party's result: row positions (in the common order) or only the count."""

    size: int
    positions: np.ndarray | None  # into this party's key list; None if not revealed to us
    sizes: dict[str, int] = field(default_factory=dict)


class PsiProtocol(Protocol):
    """One party's side of ECDH-PSI; all parties run it with the same parameters."""

    name, title = "psi", "PSI"

    def __init__(
        self, me: str, parties: list[str], keys: list[bytes], *, leader: str | None = None,
        reveal: Reveal = "intersection", receivers: list[str] | None = None,
        batch: int = BATCH, scalar: bytes | None = None, rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        parties = sorted(parties)
        if me not in parties or not 2 <= len(parties) <= 3:
            raise InputError(f"PSI needs 2 or 3 parties including {me!r}, got {parties}")
        if reveal not in ("intersection", "cardinality"):
            raise InputError(f"reveal must be 'intersection' or 'cardinality', got {reveal!r}")
        receivers, leader = roles(parties, receivers, leader)
        i = parties.index(leader)
        self.ring = parties[i:] + parties[:i]  # leader first
        self.me, self.leader, self.reveal, self.receivers = me, leader, reveal, receivers
        self.batch = batch
        self.keys = keys
        self._scalar = scalar or new_scalar()
        self._rng = rng  # tests only: shuffles are drawn from the OS CSPRNG otherwise
        # every owner shuffles its list; perm[i] = key index at shuffled position i
        self.perm = self._permutation(len(keys))
        self.hello = Hello(VERSION, parties, leader, reveal, receivers, len(keys), batch,
                           os.urandom(16))
        self.hellos: dict[str, Hello] = {me: self.hello}
        self.tag = b""
        self._final: dict[str, dict[int, bytes]] = {p: {} for p in parties}
        self._hold: dict[int, bytes] = {}  # cardinality: leader's list at its last hop
        self._early: list[Envelope] = []  # messages that overtook a peer's hello
        self._hopped: set[tuple[str, int]] = set()
        self._done_batches = 0
        self._total_batches = 0

    # ---------------------------------------------------------------- helpers
    def _permutation(self, n: int) -> np.ndarray:
        if self._rng is not None:
            return self._rng.permutation(n)
        return random_permutation(n)

    def _next(self, party: str) -> str:
        return self.ring[(self.ring.index(party) + 1) % len(self.ring)]

    def _n_batches(self, party: str) -> int:
        return math.ceil(self.hellos[party].size / self.batch)

    def progress(self) -> tuple[int, int]:
        return (self._done_batches, self._total_batches)

    # ------------------------------------------------------------------ steps
    def start(self) -> list[Action]:
        return CODEC.broadcast([p for p in self.ring if p != self.me], self.hello)

    def on_message(self, env: Envelope) -> list[Action]:
        if env.sender not in self.ring or env.sender == self.me:
            raise ProtocolError(f"PSI: message from {env.sender!r}, who is not a peer here")
        same_protocol(env, CODEC.family)
        msg, data = CODEC.decode_with_data(env)
        if isinstance(msg, Hello):
            actions = self._on_hello(env, msg)
            if len(self.hellos) == len(self.ring):  # replay what overtook a slow hello
                early, self._early = self._early, []
                for e in early:
                    actions += self.on_message(e)
            return actions
        if len(self.hellos) < len(self.ring):  # links are ordered per pair, not globally
            self._early.append(env)
            return []
        if isinstance(msg, Points):
            head = msg
            self._check_batch(env.sender, head, data, full=True)
            n = len(self.ring)
            hops = (self.ring.index(self.me) - self.ring.index(head.owner)) % n
            seen = (head.owner, head.index)
            if (env.sender != self.ring[self.ring.index(self.me) - 1] or head.hops != hops
                    or head.hops < 1 or seen in self._hopped):
                raise ProtocolError(f"PSI: {env.sender!r} forwarded batch {head.index} of "
                                    f"{head.owner!r} out of turn")
            self._hopped.add(seen)
            return [Compute(("hop", head.owner, head.index, head.hops), mul_points,
                            (self._scalar, bytes(data)))]
        if isinstance(msg, Final):
            if self.me != self.leader:
                raise ProtocolError(f"PSI: final values sent to non-leader by {env.sender!r}")
            self._store_final(env.sender, msg, bytes(data))
            return self._maybe_finish()
        return self._on_result(env, msg, data)

    def _on_hello(self, env: Envelope, hello: Hello) -> list[Action]:
        mine = self.hello
        agreed = (hello.version, hello.parties, hello.leader, hello.reveal, hello.receivers,
                  hello.batch)
        if agreed != (mine.version, mine.parties, mine.leader, mine.reveal, mine.receivers,
                      mine.batch):
            raise ProtocolError(f"PSI parameters differ: {env.sender!r} runs {_terms(hello)}; "
                                f"this party runs {_terms(mine)}")
        if env.sender in self.hellos or hello.size < 0:
            raise ProtocolError(f"PSI: duplicate or invalid hello from {env.sender!r}")
        self.hellos[env.sender] = hello
        if len(self.hellos) < len(self.ring):
            return []
        nonces = b"".join(self.hellos[p].nonce for p in sorted(self.hellos))
        self.tag = nonces.hex().encode()
        self._total_batches = sum(self._n_batches(p) for p in self.ring)
        if any(h.size == 0 for h in self.hellos.values()):  # nothing can match
            return self._maybe_finish(empty=True)
        keys = [self.keys[i] for i in self.perm]
        return [Compute(("own", self.me, k, 0), hash_and_mul,
                        (self._scalar, self.tag, keys[k * self.batch : (k + 1) * self.batch]))
                for k in range(self._n_batches(self.me))]

    def _check_batch(self, sender: str, head: Points | Final, data: memoryview, *,
                     full: bool) -> None:
        if head.owner not in self.ring or not 0 <= head.index < self._n_batches(head.owner):
            raise ProtocolError(f"PSI: {sender!r} sent batch {head.index} of {head.owner!r}, "
                                "which does not exist")
        size = min(self.batch, self.hellos[head.owner].size - head.index * self.batch)
        want = size * (POINT if full else TRUNC)
        if len(data) != want:
            raise ProtocolError(f"PSI: {sender!r} sent {len(data)} bytes for batch "
                                f"{head.index} of {head.owner!r}; expected {want}")

    def on_computed(self, key: Any, result: Any) -> list[Action]:
        _, owner, index, hops = key
        hops += 1
        self._done_batches += 1
        if hops < len(self.ring):
            return [CODEC.send(self._next(self.me), Points(owner, hops, index), result)]
        trunc = _truncate(result)
        if self.reveal == "cardinality" and owner == self.leader:
            self._hold[index] = trunc
            if len(self._hold) < self._n_batches(owner):
                return []
            values = _split(b"".join(self._hold[i] for i in sorted(self._hold)))
            values = [values[i] for i in self._permutation(len(values))]
            return self._send_final(owner, [b"".join(values[k * self.batch:(k + 1) * self.batch])
                                            for k in range(self._n_batches(owner))])
        return self._send_final(owner, [trunc], first=index)

    def _send_final(self, owner: str, chunks: list[bytes], first: int = 0) -> list[Action]:
        if self.me == self.leader:
            for k, c in enumerate(chunks):
                self._store_final(self.me, Final(owner, len(self.ring), first + k), c)
            return self._maybe_finish()
        return [CODEC.send(self.leader, Final(owner, len(self.ring), first + k), c)
                for k, c in enumerate(chunks)]

    def _store_final(self, sender: str, head: Final, data: bytes) -> None:
        self._check_batch(sender, head, memoryview(data), full=False)
        if head.index in self._final[head.owner]:
            raise ProtocolError(f"PSI: batch {head.index} of {head.owner!r} arrived twice")
        self._final[head.owner][head.index] = data

    # ---------------------------------------------------------------- results
    def _maybe_finish(self, empty: bool = False) -> list[Action]:
        if self.me != self.leader or (not empty and any(
                len(self._final[p]) < self._n_batches(p) for p in self.ring)):
            return []
        values = {p: np.frombuffer(b"" if empty else b"".join(
                      self._final[p][k] for k in range(self._n_batches(p))), np.uint8
                  ).reshape(-1, TRUNC) for p in self.ring}
        matched = match_values(values, self.ring)
        n_common = len(matched[self.leader])
        sizes = {p: h.size for p, h in self.hellos.items()}
        out: list[Action] = []
        for p in self.ring:
            positions = None
            if self.reveal == "intersection" and p in self.receivers:
                positions = matched[p]
            size = n_common if p in self.receivers else -1  # others learn only that it ended
            if p == self.me:
                self._finish(PsiOutcome(size, positions, sizes))
                continue
            out.append(CODEC.send(p, ResultHead(size, positions is not None, sizes),
                                  b"" if positions is None else positions.astype(">i8").tobytes()))
        return out

    def _on_result(self, env: Envelope, head: ResultHead, data: memoryview) -> list[Action]:
        if env.sender != self.leader:
            raise ProtocolError(f"PSI: result from {env.sender!r}, who is not the leader")
        positions = None
        if head.revealed:
            if self.me not in self.receivers or len(data) != 8 * head.size:
                raise ProtocolError(f"PSI: malformed result from {env.sender!r}")
            shuffled = np.frombuffer(data, dtype=">i8").astype(np.int64)
            if shuffled.size and (shuffled.min() < 0 or shuffled.max() >= len(self.perm)):
                raise ProtocolError(f"PSI: result from {env.sender!r} points outside our set")
            positions = shuffled
        self._finish(PsiOutcome(head.size, positions, dict(head.sizes)))
        return []

    def _finish(self, outcome: PsiOutcome) -> None:
        if outcome.positions is not None:
            outcome.positions = self.perm[outcome.positions]
        self.done, self.result = True, outcome


def repeats(ranked: np.ndarray) -> bool:
    """Whether a sorted array holds a value twice."""
    return len(ranked) > 1 and bool((ranked[1:] == ranked[:-1]).any())


FAMILIES = {"psi": "ECDH-PSI", "kkrt": "KKRT"}


def same_protocol(env: Envelope, family: str) -> None:
    """Refuse, with a message saying so, a message of the other PSI protocol."""
    theirs = env.kind.partition("/")[0]
    if theirs != family and theirs in FAMILIES:
        raise ProtocolError(f"PSI: {env.sender!r} runs {FAMILIES[theirs]} and this party "
                            f"{FAMILIES[family]}: every party must pass the same protocol=")


def random_permutation(n: int) -> np.ndarray:
    """A uniformly random permutation of ``n`` from the OS CSPRNG: the order of 128-bit
    random keys (sorted on their first 64 bits; both halves when two of those tie, with
    probability ~n^2 / 2^65; a full tie, ~n^2 / 2^129, keeps two elements in input
    order)."""
    keys = np.frombuffer(os.urandom(16 * n), "<u8").reshape(n, 2)
    order = np.argsort(keys[:, 0])
    if repeats(keys[order, 0]):
        order = np.lexsort((keys[:, 1], keys[:, 0]))
    return order.astype(np.int64)


def _truncate(points: bytes) -> bytes:
    arr = np.frombuffer(points, dtype=np.uint8).reshape(-1, POINT)
    return arr[:, :TRUNC].tobytes()


def match_values(values: dict[str, np.ndarray], ring: list[str]) -> dict[str, np.ndarray]:
    """Positions of the values common to every list, per party, in one shared order.

    ``values[p]`` is an (n, 12) uint8 array of party p's fully encrypted, truncated points.
    Matching sorts 64-bit prefixes (numpy, ~0.3 s per million) and then checks the other
    4 bytes; should two values of one list share a prefix (probability ~n^2 / 2^65), the
    exact but slower set-based matcher is used instead.
    """
    keys = {p: np.ascontiguousarray(v[:, :8]).view(">u8").ravel() for p, v in values.items()}
    if any(repeats(np.sort(k.astype(np.uint64))) for k in keys.values()):  # 15x np.unique's speed
        return _match_exact(values, ring)
    leader = ring[0]
    idx = {leader: np.arange(len(keys[leader]))}
    common = keys[leader]
    for p in ring[1:]:
        common, i_c, i_p = np.intersect1d(common, keys[p], assume_unique=True,
                                          return_indices=True)
        same = (values[leader][idx[leader][i_c], 8:] == values[p][i_p, 8:]).all(axis=1)
        common = common[same]
        idx = {q: ix[i_c][same] for q, ix in idx.items()}
        idx[p] = i_p[same]
    return {p: idx[p].astype(np.int64) for p in ring}


def _match_exact(values: dict[str, np.ndarray], ring: list[str]) -> dict[str, np.ndarray]:
    lists = {p: [bytes(row) for row in v] for p, v in values.items()}
    common = set(lists[ring[0]])
    for p in ring[1:]:
        common &= set(lists[p])
    order = sorted(common)
    out = {}
    for p in ring:
        index = {v: i for i, v in enumerate(lists[p])}
        out[p] = np.fromiter((index[v] for v in order), np.int64, len(order))
    return out


def _split(data: bytes) -> list[bytes]:
    return [data[i : i + TRUNC] for i in range(0, len(data), TRUNC)]


__all__ = ["BATCH", "TRUNC", "InvalidPoint", "PsiOutcome", "PsiProtocol", "random_permutation",
           "repeats", "same_protocol"]


def _terms(hello: Hello) -> str:
    """A run's parameters in the words of the panels (and the CLI's names in brackets)."""
    shown = ("the count only (reveal='cardinality')" if hello.reveal == "cardinality"
             else "the intersection (reveal='intersection')")
    return (f"parties {list(hello.parties)}, leader {hello.leader!r}, results to "
            f"{list(hello.receivers)}, revealing {shown}, batch {hello.batch}, "
            f"protocol version {hello.version}")
