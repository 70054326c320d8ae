"""The relay's rooms and mailboxes, and the one memory budget all mailboxes share."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import Connection


@dataclass
class MemoryBudget:
    """Bytes waiting in all mailboxes together, against one cap."""

    cap: int
    used: int = 0

    @property
    def full(self) -> bool:
        return self.used >= self.cap


@dataclass
class Mailbox:
    """Frames waiting for one member, numbered from 1, kept until acknowledged."""

    budget: MemoryBudget
    items: deque[tuple[int, str, bytes | memoryview]] = field(default_factory=deque)
    next_seq: int = 1
    size: int = 0
    conn: Connection | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, sender: str, body: bytes | memoryview) -> None:
        self.items.append((self.next_seq, sender, body))
        self.next_seq += 1
        self.size += len(body)
        self.budget.used += len(body)
        self.changed.set()

    def ack(self, seq: int) -> int:
        """Drop the frames up to ``seq``; returns the bytes freed."""
        freed = 0
        while self.items and self.items[0][0] <= seq:
            freed += len(self.items.popleft()[2])
        self.size -= freed
        self.budget.used -= freed
        return freed

    def clear(self) -> int:
        """Drop every waiting frame (the room is closing); returns the bytes freed."""
        return self.ack(self.next_seq)


@dataclass
class Room:
    """A room: its roster, a mailbox per member, and when it may be closed.

    ``epoch`` names this incarnation of the room: a member resumes its mailbox only within
    it (a room closed while idle and opened again starts afresh, like a relay restart).
    ``expires``: Unix time the organiser's grant ends (0: none); ``kept``: the room came
    from the relay's rooms file and is emptied, never forgotten, when idle."""

    name: str
    roster: dict[str, bytes]
    mailboxes: dict[str, Mailbox]
    expires: int = 0
    kept: bool = False
    epoch: str = field(default_factory=lambda: secrets.token_hex(8))
    idle_since: float = field(default_factory=time.monotonic)

    @classmethod
    def new(cls, name: str, roster: dict[str, bytes], budget: MemoryBudget, *,
            expires: int = 0, kept: bool = False) -> Room:
        return cls(name, dict(roster), {n: Mailbox(budget) for n in roster}, expires, kept)

    def present(self) -> list[str]:
        return sorted(n for n, mb in self.mailboxes.items() if mb.conn is not None)

    @property
    def waiting(self) -> int:
        """Bytes waiting in the room's mailboxes."""
        return sum(mb.size for mb in self.mailboxes.values())

    def expired(self, now: float | None = None) -> bool:
        return bool(self.expires) and self.expires <= (time.time() if now is None else now)

    def idle_for(self, now: float | None = None) -> float:
        """Seconds since the last member left (0 while anyone is connected)."""
        if any(mb.conn is not None for mb in self.mailboxes.values()):
            return 0.0
        return (time.monotonic() if now is None else now) - self.idle_since
