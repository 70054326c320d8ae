"""Sans-IO protocols: state machines that consume messages and return actions.

A protocol never touches a socket, a thread or a clock: :meth:`Protocol.start` and
:meth:`Protocol.on_message` return what to send (:class:`Send`) and what heavy work to run
(:class:`Compute`); :attr:`Protocol.done` says when :attr:`Protocol.result` is ready. To stop,
a protocol raises: the driver (:mod:`fedlab_kit.net.driver`, or
:class:`~fedlab_kit.protocol.local.LocalNetwork` in memory) tells the peers why.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from ..errors import InternalError
from .envelope import Envelope


@dataclass(frozen=True)
class Send:
    """A message a protocol wants sent."""

    to: str
    kind: str
    payload: bytes | bytearray | memoryview


@dataclass(frozen=True)
class Compute:
    """CPU-heavy work the driver runs off the event loop; the result comes back through
    :meth:`Protocol.on_computed`. ``fn`` must be a picklable top-level function."""

    key: Hashable
    fn: Callable[..., Any]
    args: tuple[Any, ...]


Action = Send | Compute
ProgressCallback = Callable[[str, int, int], None]


class Protocol(abc.ABC):
    """Base class of sans-IO protocols."""

    #: short name used in session ids and progress reports
    name: str = "protocol"
    #: what an analyst calls it, in error messages ("PSI"); the name if empty
    title: str = ""

    def __init__(self) -> None:
        self.done = False
        self.result: Any = None
        #: peers the run went on without (dropouts): not told of errors, not waited for
        self.gone: set[str] = set()

    @abc.abstractmethod
    def start(self) -> list[Action]:
        """Messages to send (and work to start) first."""

    @abc.abstractmethod
    def on_message(self, env: Envelope) -> list[Action]:
        """Consume one message; return the messages (and work) it causes."""

    def on_computed(self, key: Hashable, result: Any) -> list[Action]:
        """Consume the result of a :class:`Compute`; return what it causes."""
        raise InternalError(f"{self.name} does not request computations")

    def on_departed(self, peer: str, event: str) -> list[Action] | None:
        """A watched peer left (``event``: "left", "lost" or "restarted"). None: the run
        cannot go on without it (the driver stops it, except after "lost", which may be
        transient); a list: the protocol goes on without it (and adds it to :attr:`gone`)."""
        return None

    def on_timeout(self) -> list[Action] | None:
        """Nothing arrived within the driver's timeout. None: the run stops with a
        TimeoutError; a list: it goes on (e.g. without the silent peers)."""
        return None

    def progress(self) -> tuple[int, int]:
        """(steps done, steps total) for progress bars; (0, 0) if unknown."""
        return (0, 0)
