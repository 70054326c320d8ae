"""Secure aggregation with dropouts (Bonawitz et al., CCS 2017, the semi-honest protocol),
as a sans-IO engine that a training protocol embeds.

Setup: every member makes an X25519 *mask key* and a 32-byte *self-mask seed* and sends each
other member its public key and that member's Shamir shares of both (threshold ``t``, by
default a majority). Pairwise seeds come from the X25519 agreements.

Round ``r``: member ``u`` sends the aggregator ``x_u + PRG(b_u,r) + sum_v +-PRG(s_uv,r)`` in
the ring mod 2^64 (``v`` over the members still in, + when ``u < v``); each message alone is
uniform. The aggregator waits for every member (or, after the driver's timeout or a peer's
leaving, goes on with those it heard from: the *included*; the others *dropped*), asks the
included for their round self-mask seeds and their shares of the dropped members' mask keys,
rebuilds those keys (``t`` shares), and so removes every mask: it learns the sum over the
included and nothing else. An included member that falls silent before it reveals its
self-mask seed has it rebuilt from ``t`` shares instead. A member gives out, for any peer,
shares of its mask key or of its self-mask seed, never both: a slow member declared dropped
stays hidden by its self mask. Members dropped or silent are out for the rest of the run.

Refused (every member checks what it is asked): fewer than three members (the sum of two
tells each the other's vector), a round whose sum would cover fewer than ``floor`` =
``max(3, t)`` inputs, shares asked of both kinds for one peer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ..errors import ProtocolError
from ..protocol import Envelope, Send
from . import messages as m
from .errors import HorizontalError
from .masks import derive, prg
from .shamir import SHARE_BYTES, combine, split

MIN_INPUTS = 3


def _raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def _raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)


@dataclass
class _Round:
    """The aggregator's view of one round."""

    size: int | None = None
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    phase: str = "inputs"  # -> "reveal" -> "recover" -> "summed" -> "closed"
    included: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    reveals: dict[str, m.Reveal] = field(default_factory=dict)
    silent: list[str] = field(default_factory=list)
    self_shares: dict[str, dict[str, bytes]] = field(default_factory=dict)


class SecAgg:
    """One party's secure-aggregation state over a run of rounds.

    Drive it from a protocol: send :meth:`start`'s messages, pass every ``secagg/*`` message
    to :meth:`on_message`, and once :attr:`ready`, :meth:`submit` each round's uint64 vector.
    At the aggregator :attr:`sums` then gets the round's total; it answers with
    :meth:`close` (the outcome every member receives); members find it in :attr:`outcomes`.
    """

    def __init__(self, me: str, members: Sequence[str], aggregator: str, run: bytes, *,
                 threshold: int | None = None, min_inputs: int = MIN_INPUTS) -> None:
        names = sorted(set(members))
        if len(names) != len(members):
            raise HorizontalError(f"secure aggregation: members named twice in {list(members)}")
        if me not in names or aggregator not in names:
            raise HorizontalError(f"secure aggregation: {me!r} and the aggregator "
                                  f"{aggregator!r} must be members of {names}")
        if len(names) < MIN_INPUTS:
            raise HorizontalError(
                f"secure aggregation needs at least {MIN_INPUTS} parties, got {len(names)}: the "
                "sum of two parties' vectors tells each of them the other's")
        self.threshold = len(names) // 2 + 1 if threshold is None else threshold
        if not 2 <= self.threshold <= len(names) or min_inputs < MIN_INPUTS:
            raise HorizontalError(f"secure aggregation: threshold must be in [2, {len(names)}] "
                                  f"and min_inputs >= {MIN_INPUTS}")
        self.floor = max(min_inputs, self.threshold)
        self.me, self.members, self.aggregator, self.run = me, names, aggregator, run
        self.x = {name: i + 1 for i, name in enumerate(names)}  # Shamir x coordinates
        self._key = X25519PrivateKey.generate()
        self._seed = os.urandom(32)
        self.public: dict[str, bytes] = {me: _raw_public(self._key)}
        self._pair: dict[str, bytes] = {}  # peer -> pairwise seed
        self._key_shares: dict[str, bytes] = {}  # my shares of each member's mask key
        self._seed_shares: dict[str, bytes] = {}  # ... and of its self-mask seed
        self._given: dict[str, str] = {}  # peer -> "key" | "seed": what I gave shares of
        self.live: list[str] = list(names)
        self.gone: set[str] = set()  # members out of the run
        self.round = 0  # the next round to submit
        self.sums: dict[int, np.ndarray] = {}  # aggregator: a round's total, until closed
        self.included: dict[int, list[str]] = {}  # the members in a round's sum
        self.outcomes: dict[int, bytes] = {}  # members: what the aggregator closed with
        self._rounds: dict[int, _Round] = {}
        self._departed: set[str] = set()  # aggregator: members that left or fell silent
        self._unmasked: dict[int, list[str]] = {}  # member: the included of a round

    # ------------------------------------------------------------------ setup
    @property
    def is_aggregator(self) -> bool:
        return self.me == self.aggregator

    @property
    def ready(self) -> bool:
        """Every member's hello is in: rounds can start."""
        return len(self.public) == len(self.members)

    def start(self) -> list[Send]:
        xs = [self.x[n] for n in self.members]
        keys = split(_raw_private(self._key), self.threshold, xs)
        seeds = split(self._seed, self.threshold, xs)
        self._key_shares[self.me] = keys[self.x[self.me]]
        self._seed_shares[self.me] = seeds[self.x[self.me]]
        return [m.CODEC.send(peer, m.Hello(m.VERSION, self.run, self.members, self.aggregator,
                                           self.threshold, self.public[self.me],
                                           keys[self.x[peer]], seeds[self.x[peer]]))
                for peer in self.members if peer != self.me]

    def _pair_seed(self, key: X25519PrivateKey, peer_public: bytes, a: str, b: str) -> bytes:
        try:
            shared = key.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError:
            raise ProtocolError(f"secure aggregation: a degenerate X25519 key among {a!r}, "
                                f"{b!r}") from None
        lo, hi = sorted((a, b))
        return derive(shared, "pair", self.run, lo, hi)

    def _on_hello(self, env: Envelope, h: m.Hello) -> None:
        if (h.version, h.run, h.members, h.aggregator, h.threshold) != (
                m.VERSION, self.run, self.members, self.aggregator, self.threshold):
            raise ProtocolError(
                f"secure aggregation: {env.sender!r} runs with members {h.members}, aggregator "
                f"{h.aggregator!r}, threshold {h.threshold} (version {h.version}); this party "
                f"with {self.members}, {self.aggregator!r}, {self.threshold} (version "
                f"{m.VERSION}): start every party with the same settings")
        if env.sender in self.public or len(h.public_key) != 32 or {
                len(h.key_share), len(h.seed_share)} != {SHARE_BYTES}:
            raise ProtocolError(f"secure aggregation: a repeated or malformed hello from "
                                f"{env.sender!r}")
        self.public[env.sender] = bytes(h.public_key)
        self._key_shares[env.sender] = bytes(h.key_share)
        self._seed_shares[env.sender] = bytes(h.seed_share)
        self._pair[env.sender] = self._pair_seed(self._key, h.public_key, self.me, env.sender)

    # ------------------------------------------------------------------ rounds
    def submit(self, round_: int, vector: np.ndarray) -> list[Send]:
        """Mask this party's uint64 vector for round ``round_`` and send it (the aggregator
        keeps its own)."""
        if not self.ready or round_ != self.round or self.me not in self.live:
            raise ProtocolError(f"secure aggregation: round {round_} submitted out of turn")
        vec = np.ascontiguousarray(vector, dtype=np.uint64).ravel()
        masked = vec + prg(derive(self._seed, "self", round_), len(vec))
        for peer in self.live:
            if peer != self.me:
                mask = prg(derive(self._pair[peer], round_), len(vec))
                masked = masked + mask if self.me < peer else masked - mask  # wraps mod 2^64
        self.round += 1
        if self.is_aggregator:
            rnd = self._rounds.setdefault(round_, _Round())
            rnd.size = len(vec)
            rnd.inputs[self.me] = masked
            return self._advance()
        return [m.CODEC.send(self.aggregator, m.Input(round_, len(vec)), masked.tobytes())]

    def close(self, round_: int, outcome: bytes | bytearray | memoryview) -> list[Send]:
        """Aggregator: end round ``round_``, sending ``outcome`` to the members still in."""
        rnd = self._rounds.get(round_)
        if rnd is None or rnd.phase != "summed":
            raise ProtocolError(f"secure aggregation: round {round_} closed before its sum")
        rnd.phase = "closed"
        self.sums.pop(round_, None)
        out = set(rnd.dropped) | set(rnd.silent)
        self.live = [p for p in self.live if p not in out]
        self.gone |= out
        msg = m.Closed(round_, rnd.included, self.live)
        sends = [m.CODEC.send(p, msg, outcome) for p in self.live if p != self.me]
        # a member left behind may still be there: it learns that it is out, not the outcome
        return sends + [m.CODEC.send(p, msg) for p in sorted(out)]

    def on_message(self, env: Envelope) -> list[Send]:
        msg, tail = m.CODEC.decode_with_data(env)
        if isinstance(msg, m.Hello):
            self._on_hello(env, msg)
            return self._advance() if self.is_aggregator else []
        if not self.ready:
            raise ProtocolError(f"secure aggregation: {env.kind!r} from {env.sender!r} "
                                "before every member's hello")
        if self.is_aggregator:
            return self._aggregator_message(env, msg, tail)
        if env.sender != self.aggregator:
            raise ProtocolError(f"secure aggregation: {env.kind!r} from {env.sender!r}, who "
                                "is not the aggregator")
        return self._member_message(msg, tail)

    # ------------------------------------------------------------------ members
    def _check_round(self, round_: int) -> None:
        if round_ != self.round - 1 or round_ in self.outcomes:
            raise ProtocolError(f"secure aggregation: the aggregator asked about round "
                                f"{round_}, this party is in round {self.round - 1}")

    def _member_message(self, msg: object, tail: memoryview) -> list[Send]:
        if isinstance(msg, m.Unmask):
            return self._on_unmask(msg)
        if isinstance(msg, m.Recover):
            self._check_round(msg.round)
            included = self._unmasked.get(msg.round, [])
            if not set(msg.silent) <= set(included) or self.me in msg.silent:
                raise ProtocolError(f"secure aggregation: asked for the self-mask seeds of "
                                    f"{msg.silent}, not among the round's others {included}")
            for peer in msg.silent:
                self._give(peer, "seed")
            return [m.CODEC.send(self.aggregator, m.SelfShares(
                msg.round, {p: self._seed_shares[p] for p in msg.silent}))]
        if isinstance(msg, m.Closed):
            self._check_round(msg.round)
            if not set(msg.live) <= set(self.live) or not set(msg.live) <= set(msg.included):
                raise ProtocolError(f"secure aggregation: round {msg.round} closed with "
                                    f"members {msg.live}, not among {self.live}")
            if self.me not in msg.live:
                raise HorizontalError(
                    f"secure aggregation: the aggregator {self.aggregator!r} went on without "
                    f"this party in round {msg.round} (it heard nothing from it within its "
                    "timeout); this party is out of the run")
            self.gone |= set(self.live) - set(msg.live)
            self.live = list(msg.live)
            self.included[msg.round] = list(msg.included)
            self.outcomes[msg.round] = bytes(tail)
            return []
        raise ProtocolError(f"secure aggregation: unexpected {type(msg).__name__} from the "
                            "aggregator")

    def _give(self, peer: str, kind: str) -> None:
        if self._given.setdefault(peer, kind) != kind:
            raise ProtocolError(
                f"secure aggregation: asked for shares of {peer!r}'s "
                f"{'mask key' if kind == 'key' else 'self-mask seed'} after shares of its "
                f"{'self-mask seed' if kind == 'key' else 'mask key'}: both would unmask its "
                "vector; refused")

    def _on_unmask(self, u: m.Unmask) -> list[Send]:
        self._check_round(u.round)
        inc, drop = set(u.included), set(u.dropped)
        if (self.me not in inc or inc & drop or inc | drop != set(self.live)
                or len(u.included) != len(inc) or len(u.dropped) != len(drop)):
            raise ProtocolError(f"secure aggregation: round {u.round}'s split into included "
                                f"{u.included} and dropped {u.dropped} does not partition "
                                f"the members {self.live}")
        if len(inc) < self.floor:
            raise ProtocolError(
                f"secure aggregation: round {u.round}'s sum would cover only {len(inc)} "
                f"parties ({sorted(inc)}); at least {self.floor} are needed so that it hides "
                "each one's vector")
        for peer in u.dropped:
            self._give(peer, "key")
        self._unmasked[u.round] = sorted(inc - {self.me})
        return [m.CODEC.send(self.aggregator, m.Reveal(
            u.round, derive(self._seed, "self", u.round),
            {p: self._key_shares[p] for p in u.dropped}))]

    # ------------------------------------------------------------------ aggregator
    def _aggregator_message(self, env: Envelope, msg: object, tail: memoryview) -> list[Send]:
        rnd = self._rounds.setdefault(msg.round, _Round()) if hasattr(msg, "round") else None
        if rnd is None or env.sender not in self.live or msg.round < self.round - 1:
            return []  # from a member out of the run, or about a round long closed
        if isinstance(msg, m.Input):
            if rnd.phase != "inputs" or env.sender in rnd.inputs:
                return []  # too late: the round went on without it
            if len(tail) != 8 * msg.size:
                raise ProtocolError(f"secure aggregation: {env.sender!r}'s input holds "
                                    f"{len(tail)} bytes for {msg.size} values")
            rnd.inputs[env.sender] = np.frombuffer(tail, dtype="<u8").astype(np.uint64)
        elif isinstance(msg, m.Reveal):
            if rnd.phase != "reveal" or env.sender not in rnd.included:
                return []
            if (set(msg.key_shares) != set(rnd.dropped) or len(msg.self_seed) != 32
                    or any(len(s) != SHARE_BYTES for s in msg.key_shares.values())):
                raise ProtocolError(f"secure aggregation: a malformed reveal from "
                                    f"{env.sender!r}")
            rnd.reveals[env.sender] = msg
        elif isinstance(msg, m.SelfShares):
            if rnd.phase != "recover" or env.sender not in rnd.reveals:
                return []
            if set(msg.shares) != set(rnd.silent):
                raise ProtocolError(f"secure aggregation: a malformed share list from "
                                    f"{env.sender!r}")
            rnd.self_shares[env.sender] = dict(msg.shares)
        else:
            raise ProtocolError(f"secure aggregation: unexpected {env.kind!r} from "
                                f"{env.sender!r}")
        return self._advance()

    def _awaited(self, rnd: _Round) -> set[str]:
        if rnd.phase == "inputs":
            want = set(self.live) - set(rnd.inputs)
        elif rnd.phase == "reveal":
            want = set(rnd.included) - set(rnd.reveals)
        elif rnd.phase == "recover":
            want = set(rnd.reveals) - set(rnd.self_shares)
        else:
            return set()
        return want - self._departed

    def _advance(self) -> list[Send]:
        """Move the current round on as far as what has arrived allows."""
        r = self.round - 1
        rnd = self._rounds.get(r)
        if not self.ready or rnd is None or self.me not in rnd.inputs or self._awaited(rnd):
            return []
        if rnd.phase == "inputs":
            rnd.included = sorted(rnd.inputs)
            rnd.dropped = sorted(set(self.live) - set(rnd.inputs))
            if len(rnd.included) < self.floor:
                raise HorizontalError(
                    f"secure aggregation: in round {r} only {rnd.included} sent their input "
                    f"({', '.join(rnd.dropped)} did not within the timeout); a sum of fewer "
                    f"than {self.floor} parties would not hide each one's vector")
            sizes = {len(v) for v in rnd.inputs.values()}
            if sizes != {rnd.size}:
                raise HorizontalError(f"secure aggregation: the parties' vectors in round {r} "
                                      f"differ in length ({sorted(sizes)})")
            rnd.phase = "reveal"
            rnd.reveals[self.me] = m.Reveal(r, derive(self._seed, "self", r),
                                            {p: self._key_shares[p] for p in rnd.dropped})
            msg = m.Unmask(r, rnd.included, rnd.dropped)
            sends = [m.CODEC.send(p, msg) for p in rnd.included if p != self.me]
            return sends + self._advance()
        if rnd.phase == "reveal":
            rnd.silent = sorted(set(rnd.included) - set(rnd.reveals))
            if (rnd.dropped or rnd.silent) and len(rnd.reveals) < self.threshold:
                raise HorizontalError(
                    f"secure aggregation: in round {r} only {sorted(rnd.reveals)} answered; "
                    f"{self.threshold} are needed to remove the masks of those who left")
            if rnd.silent:
                rnd.phase = "recover"
                rnd.self_shares[self.me] = {p: self._seed_shares[p] for p in rnd.silent}
                msg = m.Recover(r, rnd.silent)
                sends = [m.CODEC.send(p, msg) for p in rnd.reveals if p != self.me]
                return sends + self._advance()
        elif rnd.phase == "recover" and len(rnd.self_shares) < self.threshold:
            raise HorizontalError(
                f"secure aggregation: in round {r} only {sorted(rnd.self_shares)} answered; "
                f"{self.threshold} are needed to remove the masks of those who left")
        if rnd.phase in ("reveal", "recover"):
            self.sums[r] = self._unmask(r, rnd)
            self.included[r] = rnd.included
            rnd.phase = "summed"
            self._departed |= set(rnd.silent)
        return []

    def _rebuild(self, shares: dict[str, bytes]) -> bytes:
        return combine({self.x[holder]: s for holder, s in shares.items()}, self.threshold)

    def _unmask(self, r: int, rnd: _Round) -> np.ndarray:
        size = rnd.size or 0
        total = np.zeros(size, dtype=np.uint64)
        for member in rnd.included:
            total += rnd.inputs[member]
            if member in rnd.reveals:
                seed = bytes(rnd.reveals[member].self_seed)
            else:
                seed = derive(self._rebuild({h: s[member] for h, s in rnd.self_shares.items()}),
                              "self", r)
            total -= prg(seed, size)
        for gone in rnd.dropped:
            raw = self._rebuild({h: bytes(v.key_shares[gone]) for h, v in rnd.reveals.items()})
            key = X25519PrivateKey.from_private_bytes(raw)
            if _raw_public(key) != self.public[gone]:
                raise ProtocolError(f"secure aggregation: the shares of {gone!r}'s mask key do "
                                    "not rebuild the key it announced")
            for member in rnd.included:
                mask = prg(derive(self._pair_seed(key, self.public[member], gone, member), r),
                           size)
                total = total - mask if member < gone else total + mask
        return total

    # ------------------------------------------------------------------ time and departures
    def on_departed(self, peer: str, event: str) -> list[Send] | None:
        """As :meth:`Protocol.on_departed`: the aggregator goes on without a member that left
        (a "lost" one only after the timeout); a member cannot go on without the aggregator."""
        if not self.ready or peer == self.aggregator or peer not in self.members:
            return None
        if not self.is_aggregator or peer not in self.live or event == "lost":
            return []
        self._departed.add(peer)
        return self._advance()

    def on_timeout(self) -> list[Send] | None:
        """The aggregator goes on without the members it is still waiting for."""
        rnd = self._rounds.get(self.round - 1)
        if not (self.is_aggregator and self.ready and rnd is not None
                and self.me in rnd.inputs and self._awaited(rnd)):
            return None
        self._departed |= self._awaited(rnd)
        return self._advance()
