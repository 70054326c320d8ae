"""Sans-IO agreement on how a PSI run is split into buckets, and where to resume.

Every party sends its set size, a fresh nonce and what its checkpoint says (bucket tag,
bucket count, finished buckets). If all checkpoints agree, the run resumes at the buckets
that every party has finished; otherwise it starts afresh with a tag made from all nonces.
A second round compares views (the nonces each party holds): a plan message from a peer's
aborted earlier attempt may arrive before its current one; a newer plan from the same peer
replaces it, views are re-announced, and the plan stands once every view is the same.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from typing import Any

import msgspec

from ..errors import InputError, ProtocolError
from ..protocol import Action, Codec, Envelope, Protocol

VERSION = 1


class PlanMsg(msgspec.Struct, array_like=True):
    version: int
    parties: list[str]
    bucket_size: int
    size: int
    nonce: bytes
    resume_tag: bytes = b""
    resume_buckets: int = 0
    done: list[int] = msgspec.field(default_factory=list)


class View(msgspec.Struct, array_like=True):
    nonces: dict[str, bytes]


CODEC = Codec("psi-plan", {"plan": PlanMsg, "view": View})


@dataclass(frozen=True)
class Resume:
    """A party's checkpoint, as far as the plan is concerned."""

    tag: bytes
    n_buckets: int
    done: frozenset[int]


@dataclass(frozen=True)
class Plan:
    tag: bytes  # bucket assignment key, shared by all parties
    n_buckets: int
    done: frozenset[int]  # buckets every party has finished
    attempt: str  # names this attempt's bucket sessions
    resumed: bool
    sizes: dict[str, int]


class PlanProtocol(Protocol):
    name, title = "psi-plan", "PSI"

    def __init__(self, me: str, parties: list[str], size: int, bucket_size: int,
                 resume: Resume | None = None) -> None:
        super().__init__()
        if bucket_size < 1:
            raise InputError("bucket_size must be at least 1")
        self.me, self.parties = me, sorted(parties)
        r = resume or Resume(b"", 0, frozenset())
        self.msg = PlanMsg(VERSION, self.parties, bucket_size, size, os.urandom(16), r.tag,
                           r.n_buckets, sorted(r.done))
        self.msgs: dict[str, PlanMsg] = {me: self.msg}
        self.views: dict[str, dict[str, bytes]] = {}
        self._announced: dict[str, bytes] | None = None

    def start(self) -> list[Action]:
        return CODEC.broadcast([p for p in self.parties if p != self.me], self.msg)

    def on_message(self, env: Envelope) -> list[Action]:
        if env.sender not in self.parties or env.sender == self.me:
            raise ProtocolError(f"PSI plan: message from non-party {env.sender!r}")
        msg = CODEC.decode(env)
        if isinstance(msg, PlanMsg):
            self._check(env.sender, msg)
            self.msgs[env.sender] = msg  # a later plan replaces a stale one
        else:
            self.views[env.sender] = dict(msg.nonces)
        return self._step()

    def _check(self, sender: str, msg: PlanMsg) -> None:
        mine = self.msg
        if (msg.version, msg.parties, msg.bucket_size) != (mine.version, mine.parties,
                                                           mine.bucket_size):
            raise ProtocolError(
                f"PSI plan differs: {sender!r} runs parties={msg.parties} "
                f"bucket_size={msg.bucket_size}; we run parties={mine.parties} "
                f"bucket_size={mine.bucket_size}")

    def _view(self) -> dict[str, bytes]:
        return {p: self.msgs[p].nonce for p in self.parties}

    def _step(self) -> list[Action]:
        if len(self.msgs) < len(self.parties):
            return []
        view = self._view()
        out: list[Action] = []
        if view != self._announced:
            self._announced = view
            out = list(CODEC.broadcast([p for p in self.parties if p != self.me], View(view)))
        if all(self.views.get(p) == view for p in self.parties if p != self.me):
            self.done, self.result = True, self._decide()
        return out

    def _decide(self) -> Plan:
        msgs = [self.msgs[p] for p in self.parties]
        sizes = {p: self.msgs[p].size for p in self.parties}
        attempt = hashlib.sha256(b"".join(m.nonce for m in msgs)).hexdigest()[:16]
        first = msgs[0]
        if first.resume_tag and all((m.resume_tag, m.resume_buckets)
                                    == (first.resume_tag, first.resume_buckets) for m in msgs):
            done = frozenset.intersection(*(frozenset(m.done) for m in msgs))
            return Plan(first.resume_tag, first.resume_buckets, done, attempt, True, sizes)
        tag = hashlib.sha256(b"fedlab-psi-plan|" + b"".join(m.nonce for m in msgs)).digest()
        n = max(1, math.ceil(max(sizes.values()) / self.msg.bucket_size))
        return Plan(tag, n, frozenset(), attempt, False, sizes)

    def progress(self) -> tuple[int, int]:
        return (len(self.msgs) + len(self.views), 2 * len(self.parties) - 1)


def bucket_of(tag: bytes, keys: list[bytes], n_buckets: int) -> Any:
    """Bucket index of each encoded ID (a keyed hash, identical at every party)."""
    import numpy as np

    if n_buckets == 1:
        return np.zeros(len(keys), dtype=np.int64)
    prefix = b"fedlab-psi-bucket|" + tag + b"|"
    sha = hashlib.sha256
    raw = b"".join([sha(prefix + k).digest()[:8] for k in keys])
    return (np.frombuffer(raw, dtype=">u8") % np.uint64(n_buckets)).astype(np.int64)
