"""Exceptions raised by fedlab-kit, each with a message meant for an analyst."""

from __future__ import annotations


class FedlabError(Exception):
    """Base class of every error fedlab-kit raises on purpose."""


class InvitationError(FedlabError):
    """An invitation, party card or key file is malformed or does not match."""


class RelayRejected(FedlabError):
    """The relay refused to let this party join (credential, room, name, limits)."""


class RelayUnavailable(FedlabError):
    """The relay could not be reached for longer than the reconnect timeout."""


class SecurityError(FedlabError):
    """A peer's message failed authentication, was replayed or was misrouted.

    The session is aborted: the message names the peer so the analyst knows whom to ask.
    """

    def __init__(self, peer: str, what: str) -> None:
        super().__init__(f"message from peer {peer!r} rejected: {what}; the session is aborted")
        self.peer = peer


class ProtocolError(FedlabError):
    """A peer sent a message the running protocol cannot accept."""


class SessionClosed(FedlabError):
    """The party session was closed or aborted while waiting."""


class PeerLost(FedlabError):
    """A peer a protocol depends on left, was lost or restarted while it ran."""

    def __init__(self, protocol: str, peer: str, event: str) -> None:
        super().__init__(f"{protocol}: peer {peer!r} {event} while the protocol ran; "
                         "run it again (with the same checkpoint, if any) once it is back")
        self.peer, self.event = peer, event
