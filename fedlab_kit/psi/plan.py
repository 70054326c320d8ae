"""Sans-IO agreement on how a PSI run is split into buckets, and where to resume.

Every party sends its set size, a fresh nonce and what its checkpoint says (bucket tag,
bucket count, finished buckets). If all checkpoints agree, the run resumes at the buckets
that every party has finished; otherwise it starts afresh with a tag made from all nonces.
A second round compares digests of what everyone received, so that a stale message from
an aborted earlier attempt is caught at once instead of stalling the run.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from typing import Any

import msgspec

from ..envelope import Envelope
from ..errors import ProtocolError
from ..protocol import Action, Protocol, Send

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
    name = "psi-plan"

    def __init__(self, me: str, parties: list[str], size: int, bucket_size: int,
                 resume: Resume | None = None) -> None:
        super().__init__()
        if bucket_size < 1:
            raise ValueError("bucket_size must be at least 1")
        self.me, self.parties = me, sorted(parties)
        r = resume or Resume(b"", 0, frozenset())
        self.msg = PlanMsg(VERSION, self.parties, bucket_size, size, os.urandom(16), r.tag,
                           r.n_buckets, sorted(r.done))
        self.msgs: dict[str, PlanMsg] = {me: self.msg}
        self.digests: dict[str, bytes] = {}
        self._plan: Plan | None = None

    def start(self) -> list[Action]:
        data = msgspec.msgpack.encode(self.msg)
        return [Send(p, "plan", data) for p in self.parties if p != self.me]

    def on_message(self, env: Envelope) -> list[Action]:
        if env.sender not in self.parties or env.sender == self.me:
            raise ProtocolError(f"PSI plan: message from non-party {env.sender!r}")
        try:
            if env.kind == "plan":
                return self._on_plan(env.sender, msgspec.msgpack.decode(env.payload,
                                                                         type=PlanMsg))
            if env.kind == "plan-digest":
                return self._on_digest(env.sender, bytes(env.payload))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProtocolError(f"PSI plan: malformed message from {env.sender!r}") from exc
        raise ProtocolError(f"PSI plan: unexpected {env.kind!r} from {env.sender!r}")

    def _on_plan(self, sender: str, msg: PlanMsg) -> list[Action]:
        if sender in self.msgs:
            raise ProtocolError(f"PSI plan: two plans from {sender!r} (a stale one from an "
                                "aborted run?); run psi again")
        mine = self.msg
        if (msg.version, msg.parties, msg.bucket_size) != (mine.version, mine.parties,
                                                           mine.bucket_size):
            raise ProtocolError(
                f"PSI plan differs: {sender!r} runs parties={msg.parties} "
                f"bucket_size={msg.bucket_size}; we run parties={mine.parties} "
                f"bucket_size={mine.bucket_size}")
        self.msgs[sender] = msg
        if len(self.msgs) < len(self.parties):
            return []
        self._plan = self._decide()
        digest = self._digest()
        self.digests[self.me] = digest
        out: list[Action] = [Send(p, "plan-digest", digest) for p in self.parties
                             if p != self.me]
        return out + self._maybe_done()

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

    def _digest(self) -> bytes:
        return hashlib.sha256(b"".join(msgspec.msgpack.encode(self.msgs[p])
                                       for p in self.parties)).digest()

    def _on_digest(self, sender: str, digest: bytes) -> list[Action]:
        if sender in self.digests:
            raise ProtocolError(f"PSI plan: two digests from {sender!r}")
        self.digests[sender] = digest
        return self._maybe_done()

    def _maybe_done(self) -> list[Action]:
        if self._plan is None or len(self.digests) < len(self.parties):
            return []
        if len(set(self.digests.values())) != 1:
            raise ProtocolError("PSI plan: parties saw different plans (a stale message from "
                                "an aborted run?); run psi again")
        self.done, self.result = True, self._plan
        return []

    def progress(self) -> tuple[int, int]:
        return (len(self.msgs) + len(self.digests), 2 * len(self.parties))


def bucket_of(tag: bytes, keys: list[bytes], n_buckets: int) -> Any:
    """Bucket index of each encoded ID (a keyed hash, identical at every party)."""
    import numpy as np

    if n_buckets == 1:
        return np.zeros(len(keys), dtype=np.int64)
    prefix = b"fedlab-psi-bucket|" + tag + b"|"
    sha = hashlib.sha256
    raw = b"".join([sha(prefix + k).digest()[:8] for k in keys])
    return (np.frombuffer(raw, dtype=">u8") % np.uint64(n_buckets)).astype(np.int64)
