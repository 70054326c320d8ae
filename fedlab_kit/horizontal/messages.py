"""Wire messages of secure aggregation (msgpack via msgspec; masked vectors as uint64 in the
raw tail). A = the aggregator, M = any member (the aggregator is a member too).

- setup: ``hello`` M -> every other M (its X25519 mask key, the recipient's Shamir shares of
  its mask key and of its self-mask seed);
- per round: ``input`` M -> A (the masked vector), ``unmask`` A -> included M (who is in the
  sum, who dropped), ``reveal`` M -> A (its own round self-mask seed, its shares of the
  dropped parties' mask keys); if an included party fell silent since: ``recover`` A -> M,
  ``selfshares`` M -> A (shares of the silent party's self-mask seed); ``closed`` A -> M
  (who is still in, and the round's outcome in the tail).
"""

from __future__ import annotations

import msgspec

from ..protocol import Codec

VERSION = 1


class Hello(msgspec.Struct, array_like=True):
    version: int
    run: bytes
    members: list[str]
    aggregator: str
    threshold: int
    public_key: bytes
    key_share: bytes
    seed_share: bytes


class Input(msgspec.Struct, array_like=True):
    round: int
    size: int


class Unmask(msgspec.Struct, array_like=True):
    round: int
    included: list[str]
    dropped: list[str]


class Reveal(msgspec.Struct, array_like=True):
    round: int
    self_seed: bytes
    key_shares: dict[str, bytes]


class Recover(msgspec.Struct, array_like=True):
    round: int
    silent: list[str]


class SelfShares(msgspec.Struct, array_like=True):
    round: int
    shares: dict[str, bytes]


class Closed(msgspec.Struct, array_like=True):
    """``included``: whose inputs the round's sum covers; ``live``: the members in the next
    round; the tail is the caller's outcome (empty for a party left behind)."""

    round: int
    included: list[str]
    live: list[str]


CODEC = Codec("secagg", {
    "hello": Hello, "input": Input, "unmask": Unmask, "reveal": Reveal, "recover": Recover,
    "selfshares": SelfShares, "closed": Closed,
})
