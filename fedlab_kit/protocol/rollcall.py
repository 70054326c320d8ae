"""The roll call: every party tells every peer a small JSON document."""

from __future__ import annotations

from typing import Any

import msgspec

from ..errors import ProtocolError
from .codec import Codec
from .core import Protocol, Send
from .envelope import Envelope


class Doc(msgspec.Struct, array_like=True):
    json: bytes


CODEC = Codec("rollcall", {"doc": Doc})


class RollCall(Protocol):
    """Every party tells every peer a small JSON document (e.g. what data it brings).

    The result maps each party name (self included) to its document. This is the first
    step of every joint job: it checks that all parties are present, speak the same kit
    version and agree on the job before any data moves.
    """

    name, title = "rollcall", "the roll call"

    def __init__(self, me: str, peers: list[str], info: dict[str, Any]) -> None:
        super().__init__()
        self.me, self.peers = me, list(peers)
        self.docs: dict[str, Any] = {me: info}
        self._doc = Doc(msgspec.json.encode(info))

    def start(self) -> list[Send]:
        if not self.peers:  # alone: nothing to wait for
            self.done, self.result = True, dict(self.docs)
        return CODEC.broadcast(self.peers, self._doc)

    def on_message(self, env: Envelope) -> list[Send]:
        doc = CODEC.decode(env, Doc)
        if env.sender not in self.peers:
            raise ProtocolError(f"roll call: message from {env.sender!r}, not a peer here")
        if env.sender in self.docs:
            raise ProtocolError(f"roll call: {env.sender!r} answered twice")
        try:
            self.docs[env.sender] = msgspec.json.decode(doc.json)
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"roll call: {env.sender!r} sent invalid JSON") from exc
        if len(self.docs) == len(self.peers) + 1:
            self.done, self.result = True, dict(sorted(self.docs.items()))
        return []

    def progress(self) -> tuple[int, int]:
        return (len(self.docs), len(self.peers) + 1)
