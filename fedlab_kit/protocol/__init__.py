"""The protocol core: sans-IO state machines, one message codec, in-memory runs.

Nothing here touches the network: :mod:`fedlab_kit.net.driver` runs these protocols over
a relay, :class:`LocalNetwork` in memory.
"""

from __future__ import annotations

from .codec import Codec
from .core import Action, Compute, ProgressCallback, Protocol, Send
from .envelope import Envelope
from .local import LocalNetwork
from .rollcall import RollCall

__all__ = ["Action", "Codec", "Compute", "Envelope", "LocalNetwork", "ProgressCallback",
           "Protocol", "RollCall", "Send"]
