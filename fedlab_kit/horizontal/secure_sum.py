"""``SecureSum``: a sans-IO protocol that sums each member's vectors over one or more rounds
with :class:`~fedlab_kit.horizontal.secagg.SecAgg`; every member still in gets each total.

Run it at every member at once (:func:`secure_sum` runs it over a
:class:`~fedlab_kit.Party`)::

    proto = SecureSum("chain-a", ["chain-a", "chain-b", "chain-c"], "chain-a", [vector],
                      run=b"...same 16 bytes at every member...")
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..protocol import Action, Envelope, ProgressCallback, Protocol
from .errors import HorizontalError
from .masks import check_range, decode, encode
from .secagg import SecAgg

BITS, BOUND = 24, float(1 << 32)  # default fixed point: 2^-24 resolution, |value| < 2^32


@dataclass(frozen=True)
class SumResult:
    """Each round's total, and whose vectors it covers."""

    totals: list[np.ndarray]
    included: list[list[str]]


class SecureSum(Protocol):
    """Sum ``vectors[r]`` over the members in round ``r`` (all rounds the same length)."""

    name = "secure-sum"
    title = "secure aggregation"

    def __init__(self, me: str, members: Sequence[str], aggregator: str,
                 vectors: Sequence[Any], *, run: bytes, bits: int = BITS,
                 bound: float = BOUND, threshold: int | None = None) -> None:
        super().__init__()
        if not len(vectors):
            raise HorizontalError("secure sum: no vectors to sum")
        check_range(bound, bits, len(members))
        self.bits = bits
        self.vectors = [encode(v, bits, bound, f"round {r}'s vector")
                        for r, v in enumerate(vectors)]
        if len({len(v) for v in self.vectors}) != 1:
            raise HorizontalError("secure sum: every round's vector must have the same length")
        self.agg = SecAgg(me, members, aggregator, run, threshold=threshold)
        self.gone = self.agg.gone
        self.totals: list[np.ndarray] = []
        self.covered: list[list[str]] = []

    def progress(self) -> tuple[int, int]:
        return (len(self.totals), len(self.vectors))

    def start(self) -> list[Action]:
        return list(self.agg.start())

    def _step(self, actions: list[Action]) -> list[Action]:
        agg, r = self.agg, len(self.totals)
        if agg.is_aggregator and r in agg.sums:
            total = agg.sums[r]
            actions += agg.close(r, total.tobytes())
            self._record(total, agg.included[r])
        elif not agg.is_aggregator and r in agg.outcomes:
            self._record(np.frombuffer(agg.outcomes[r], dtype="<u8"), agg.included[r])
        else:
            if agg.ready and agg.round == r and r < len(self.vectors):
                return self._step(actions + agg.submit(r, self.vectors[r]))
            return actions
        if len(self.totals) == len(self.vectors):
            self.done = True
            self.result = SumResult(self.totals, self.covered)
            return actions
        return self._step(actions)

    def _record(self, total: np.ndarray, included: list[str]) -> None:
        self.totals.append(decode(total, self.bits))
        self.covered.append(list(included))

    def on_message(self, env: Envelope) -> list[Action]:
        return self._step(list(self.agg.on_message(env)))

    def on_departed(self, peer: str, event: str) -> list[Action] | None:
        acts = self.agg.on_departed(peer, event)
        return None if acts is None else self._step(list(acts))

    def on_timeout(self) -> list[Action] | None:
        acts = self.agg.on_timeout()
        return None if acts is None else self._step(list(acts))


def secure_sum(party: Any, vectors: Sequence[Any], *, members: Sequence[str],
               aggregator: str, session: str = "secure-sum", timeout: float = 60.0,
               bits: int = BITS, bound: float = BOUND,
               progress: ProgressCallback | None = None) -> SumResult:
    """Run :class:`SecureSum` over ``party`` (a :class:`~fedlab_kit.Party`), at every member
    at the same time with the same ``session``. The aggregator goes on without a member it
    has heard nothing from for ``timeout`` seconds; the other members wait three times as
    long for the aggregator."""
    from ..net.driver import run, stopping

    if not timeout > 0:
        raise HorizontalError(f"timeout must be a positive number of seconds, got {timeout!r}")
    peers = [p for p in members if p != party.name]
    run_id = hashlib.sha256("\0".join([session, *sorted(members)]).encode()).digest()[:16]
    with stopping(party, peers, session=session, protocol=SecureSum.title):
        proto = SecureSum(party.name, members, aggregator, vectors, run=run_id, bits=bits,
                          bound=bound)
        wait = timeout if party.name == aggregator else 3 * timeout
        return run(party, proto, session=session, timeout=wait, watch=peers,
                   progress=progress)
