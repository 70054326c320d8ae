"""Run several sans-IO protocols against each other in memory (tests and docs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import InternalError
from .core import Action, Compute, Protocol
from .envelope import Envelope


@dataclass
class LocalNetwork:
    """Delivers every party's messages in order, computing :class:`Compute` inline.

    An error raised by a protocol propagates to the caller: there is no peer to tell.
    """

    protocols: dict[str, Protocol]
    delivered: int = 0
    _queue: list[Envelope] = field(default_factory=list)

    def run(self, max_messages: int = 1_000_000) -> dict[str, Any]:
        seqs: dict[tuple[str, str], int] = {}

        def post(sender: str, actions: list[Action]) -> None:
            for m in actions:
                if isinstance(m, Compute):  # computed inline, in order
                    post(sender, self.protocols[sender].on_computed(m.key, m.fn(*m.args)))
                    continue
                if m.to not in self.protocols:
                    raise InternalError(f"{sender} sent to unknown party {m.to!r}")
                seq = seqs.get((sender, m.to), 0)
                seqs[(sender, m.to)] = seq + 1
                self._queue.append(Envelope(sender, m.to, "local", m.kind, seq, bytes(m.payload)))

        for name, proto in self.protocols.items():
            post(name, proto.start())
        while self._queue:
            if self.delivered >= max_messages:
                raise InternalError("local network: message limit reached (protocol loops?)")
            env = self._queue.pop(0)
            self.delivered += 1
            post(env.recipient, self.protocols[env.recipient].on_message(env))
        stuck = [n for n, p in self.protocols.items() if not p.done]
        if stuck:
            raise InternalError(f"protocols stopped without finishing: {stuck}")
        return {n: p.result for n, p in self.protocols.items()}
