"""fedlab-kit: joint customer analytics across two or three organisations.

Parties meet in a room on a small relay (:mod:`fedlab_kit.net.relay`), exchange end-to-end
sealed messages (:class:`Party`), and run sans-IO protocols over them
(:mod:`fedlab_kit.protocol`). Names below load on first use, so worker processes that
import one small module stay light.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("fedlab-kit")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0"

_EXPORTS = {
    "FedlabError": "errors",
    "InputError": "errors",
    "InputTypeError": "errors",
    "InternalError": "errors",
    "InvitationError": "errors",
    "NetworkError": "errors",
    "PeerAborted": "errors",
    "PeerError": "errors",
    "PeerLost": "errors",
    "PeerRestarted": "errors",
    "ProtocolError": "errors",
    "RelayRejected": "errors",
    "RelayUnavailable": "errors",
    "SecurityError": "errors",
    "SessionClosed": "errors",
    "SetupError": "errors",
    "Envelope": "protocol",
    "Protocol": "protocol",
    "RollCall": "protocol",
    "Send": "protocol",
    "Compute": "protocol",
    "LocalNetwork": "protocol",
    "drive": "net.driver",
    "run": "net.driver",
    "Identity": "net.identity",
    "Invitation": "net.identity",
    "PartyCard": "net.identity",
    "AsyncParty": "net.session",
    "Party": "net.session",
    "PartyOptions": "net.session",
    "PsiResult": "psi",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'fedlab_kit' has no attribute {name!r}")
