"""fedlab-kit: joint customer analytics across two or three organisations.

Parties meet in a room on a small relay (:mod:`fedlab_kit.relay`), exchange end-to-end
sealed messages (:class:`Party`), and run sans-IO protocols over them
(:mod:`fedlab_kit.protocol`).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fedlab-kit")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0"

from .envelope import Envelope
from .errors import (
    FedlabError,
    InvitationError,
    ProtocolError,
    RelayRejected,
    RelayUnavailable,
    SecurityError,
    SessionClosed,
)
from .identity import Identity, Invitation, PartyCard
from .protocol import Protocol, RollCall, Send, drive, run
from .session import AsyncParty, Party, PartyOptions

__all__ = [
    "AsyncParty",
    "Envelope",
    "FedlabError",
    "Identity",
    "Invitation",
    "InvitationError",
    "Party",
    "PartyCard",
    "PartyOptions",
    "Protocol",
    "ProtocolError",
    "RelayRejected",
    "RelayUnavailable",
    "RollCall",
    "SecurityError",
    "Send",
    "SessionClosed",
    "__version__",
    "drive",
    "run",
]
