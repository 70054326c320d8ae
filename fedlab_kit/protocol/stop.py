"""The driver's own messages: a run's start, and the one way to stop (an abort).

Every run of a protocol at a party has a random run id, announced to the watched peers
with ``core/start`` in the run's session. An abort (``core/abort``) quotes the reason and
names the recipient's run it stops (``to_run``; empty when the sender had not heard from
the recipient yet), so an abort meant for an earlier run is never taken for the current one.
"""

from __future__ import annotations

import msgspec

from .codec import Codec


class Start(msgspec.Struct, array_like=True):
    run: bytes
    protocol: str


class Abort(msgspec.Struct, array_like=True):
    protocol: str
    reason: str
    run: bytes  # the sender's run (empty outside a run)
    to_run: bytes  # the recipient's run it stops (empty: not known to the sender)


CORE = Codec("core", {"start": Start, "abort": Abort})
START, ABORT = CORE.kind(Start), CORE.kind(Abort)
MAX_REASON = 2000  # characters of a peer's reason we quote
