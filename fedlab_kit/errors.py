"""The errors fedlab-kit raises on purpose, each with a message meant for an analyst.

One tree under :class:`FedlabError`::

    FedlabError
    +-- InputError (also ValueError)       bad input or parameters given to this party
    |   +-- InputTypeError (also TypeError)
    |   +-- InvitationError, IdError, DPError, BudgetExceeded, BoostError, NotReleasedError
    +-- PeerError                          a peer stopped taking part
    |   +-- PeerLost                       left the room (or was replaced) during a protocol
    |   |   +-- PeerRestarted              its process was replaced by a new one
    |   |   +-- PeerRerun                  it started the protocol anew mid-run
    |   +-- PeerAborted                    it stopped the protocol and said why
    +-- ProtocolError                      a peer sent what the protocol does not allow
    |   +-- SecurityError                  ... that failed authentication or was replayed
    +-- NetworkError                       the relay refused us, is unreachable, or we left
    |   +-- RelayRejected, RelayUnavailable, SessionClosed
    +-- SetupError                         this machine lacks something (browser, assets)
    |   +-- MapExportError
    +-- InternalError (also RuntimeError)  a bug in fedlab-kit: please report it
"""

from __future__ import annotations


class FedlabError(Exception):
    """Base class of every error fedlab-kit raises on purpose."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        """Errors whose constructor takes other arguments than the message still pickle
        (they cross process pools): each instance keeps the arguments it was made with."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        def __init__(self: FedlabError, *args: object, **kw: object) -> None:
            if not hasattr(self, "_init_args"):  # the outermost constructor's arguments
                self._init_args = (args, kw)
            init(self, *args, **kw)

        __init__.__doc__ = init.__doc__
        cls.__init__ = __init__  # type: ignore[method-assign]

    def __reduce__(self) -> tuple[object, ...]:
        args, kw = getattr(self, "_init_args", (self.args, {}))
        if kw:
            return (_rebuild, (type(self), args, kw))
        return (type(self), tuple(args))


def _rebuild(cls: type[FedlabError], args: tuple[object, ...],
             kw: dict[str, object]) -> FedlabError:
    return cls(*args, **kw)


# ---------------------------------------------------------------- this party's input
class InputError(FedlabError, ValueError):
    """Input or parameters given to this party are invalid; the message says which."""


class InputTypeError(InputError, TypeError):
    """An argument has the wrong type (e.g. a list where a frame is needed)."""


class InvitationError(InputError):
    """An invitation, party card or key file is malformed or does not match."""


# -------------------------------------------------------------------------- peers
class PeerError(FedlabError):
    """A peer stopped taking part in a protocol; ``peer`` names it."""

    def __init__(self, message: str, peer: str) -> None:
        super().__init__(message)
        self.peer = peer


class PeerLost(PeerError):
    """A peer a protocol depends on left the room while it ran."""

    def __init__(self, protocol: str, peer: str, event: str = "left") -> None:
        super().__init__(f"{peer!r} {_EVENTS.get(event, event)} during {protocol}; run "
                         f"{protocol} again at every party once {peer!r} is back", peer)
        self.protocol, self.event = protocol, event


_EVENTS = {"left": "left the room (its kernel or process stopped)",
           "restarted": "restarted its kernel (or process)"}


class PeerRestarted(PeerLost):
    """A peer's process was replaced by a new one while a protocol ran: whatever the old
    process held of the protocol is gone, so every party has to start it again."""

    def __init__(self, protocol: str, peer: str) -> None:
        super().__init__(protocol, peer, "restarted")


class PeerRerun(PeerLost):
    """A peer started a protocol again while this party's run still waited for it (its
    earlier run ended without a word, e.g. an interrupted kernel)."""

    def __init__(self, protocol: str, peer: str) -> None:
        PeerError.__init__(self, f"{peer!r} started {protocol} again while this party's run "
                                 f"waited for it; run {protocol} again at every party", peer)
        self.protocol, self.event = protocol, "rerun"


class PeerAborted(PeerError):
    """A peer stopped the protocol and told us why (``reason``, quoted in the message)."""

    def __init__(self, protocol: str, peer: str, reason: str) -> None:
        super().__init__(f"{peer!r} stopped {protocol}: {reason}", peer)
        self.protocol, self.reason = protocol, reason


# ---------------------------------------------------------- peers breaking the rules
class ProtocolError(FedlabError):
    """A peer sent a message the running protocol does not allow (malformed, out of turn,
    or asking for a computation this party refuses). Never raised for a local bug."""


class SecurityError(ProtocolError):
    """A peer's message failed authentication, was replayed or was misrouted.

    The session is aborted: the message names the peer so the analyst knows whom to ask.
    """

    def __init__(self, peer: str, what: str) -> None:
        super().__init__(f"message from peer {peer!r} rejected: {what}; the session is aborted")
        self.peer = peer


# ------------------------------------------------------------------------ network
class NetworkError(FedlabError):
    """The way to the relay failed."""


class RelayRejected(NetworkError):
    """The relay refused to let this party join (credential, room, name, limits).

    ``code`` says why, machine-readably (the relay's error code, or ``busy``, ``pin``,
    ``tls``, ``websocket``, ``unavailable`` for what the party saw itself)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class RelayUnavailable(NetworkError):
    """The relay could not be reached for longer than the reconnect timeout."""


class SessionClosed(NetworkError):
    """The party session was closed or aborted while waiting."""


# ------------------------------------------------------------------ machine, bugs
class SetupError(FedlabError):
    """This machine lacks something a feature needs; the message says what to install."""


class InternalError(FedlabError, RuntimeError):
    """fedlab-kit reached a state it should never reach: a bug, please report it."""
