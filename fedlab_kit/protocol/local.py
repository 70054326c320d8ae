"""Run several sans-IO protocols against each other in memory (tests and docs)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
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

    def run(self, max_messages: int = 1_000_000, max_timeouts: int = 1000) -> dict[str, Any]:
        """Run every protocol to its end; their results by party name. As the driver does,
        a party's sends go out in order and its computations run after the sends of the
        same step (here at once, before the next delivery). When nothing is in flight, the
        unfinished protocols' :meth:`~Protocol.on_timeout` runs (time passes); a protocol
        that returns no actions there is stuck."""
        seqs: dict[tuple[str, str], int] = {}
        timeouts = 0
        work: deque[tuple[str, Compute]] = deque()
        queue: deque[Envelope] = deque()

        def post(sender: str, actions: list[Action]) -> None:
            for a in actions:
                if isinstance(a, Compute):
                    work.append((sender, a))
                    continue
                if a.to not in self.protocols:
                    raise InternalError(f"{sender} sent to unknown party {a.to!r}")
                seq = seqs.get((sender, a.to), 0)
                seqs[(sender, a.to)] = seq + 1
                queue.append(Envelope(sender, a.to, "local", a.kind, seq, bytes(a.payload)))

        for name, proto in self.protocols.items():
            post(name, proto.start())
        while True:
            if not (work or queue):
                # nothing in flight: time passes, the waiting parties time out
                for name, proto in self.protocols.items():
                    if not proto.done:
                        actions = proto.on_timeout()
                        if actions:
                            post(name, actions)
                if not (work or queue):
                    break
                timeouts += 1
                if timeouts > max_timeouts:
                    raise InternalError("local network: timeout limit reached")
            if work:
                sender, job = work.popleft()
                post(sender, self.protocols[sender].on_computed(job.key, job.fn(*job.args)))
                continue
            if self.delivered >= max_messages:
                raise InternalError("local network: message limit reached (protocol loops?)")
            env = queue.popleft()
            self.delivered += 1
            recipient = self.protocols[env.recipient]
            if env.sender not in getattr(recipient, "gone", ()):  # as the driver: no word from
                # the parties it went on without
                post(env.recipient, recipient.on_message(env))
        stuck = [n for n, p in self.protocols.items() if not p.done]
        if stuck:
            raise InternalError(f"protocols stopped without finishing: {stuck}")
        return {n: p.result for n, p in self.protocols.items()}
