"""The driver's one way to stop, without sockets: parties on an in-memory hub."""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from typing import Any

import pytest

from fedlab_kit.errors import InputError, PeerAborted, PeerLost, PeerRestarted
from fedlab_kit.net.driver import drive, send_abort
from fedlab_kit.protocol import Envelope, Protocol, RollCall, Send
from fedlab_kit.protocol.stop import ABORT, CORE, START, Abort, Start


class HubParty:
    """What the driver needs of a party, delivering in order to the other hub members."""

    def __init__(self, hub: dict[str, HubParty], name: str) -> None:
        self.hub, self.name = hub, name
        hub[name] = self
        self.presence: dict[str, str] = {}
        self.inbox: deque[Envelope] = deque()
        self.sent: list[Envelope] = []
        self._seq: defaultdict[str, int] = defaultdict(int)
        self._callbacks: list[Any] = []
        self._changed = asyncio.Event()

    @property
    def peers(self) -> list[str]:
        return [p for p in self.hub if p != self.name]

    async def send(self, peer: str, payload: Any, *, kind: str, session: str) -> int:
        env = Envelope(self.name, peer, session, kind, self._seq[peer], bytes(payload))
        self._seq[peer] += 1
        self.sent.append(env)
        self.hub[peer].deliver(env)
        return env.seq

    def deliver(self, env: Envelope) -> None:
        self.inbox.append(env)
        self._changed.set()

    async def recv(self, *, session: str) -> Envelope:
        while True:
            for env in self.inbox:
                if env.session == session:
                    self.inbox.remove(env)
                    return env
            self._changed.clear()
            await self._changed.wait()

    def unrecv(self, env: Envelope) -> None:
        self.inbox.appendleft(env)
        self._changed.set()

    def waiting(self, *, sender: str, session: str, kind: str) -> list[Envelope]:
        return [e for e in self.inbox
                if (e.sender, e.session, e.kind) == (sender, session, kind)]

    async def flush(self, timeout: float | None = None, *, peers: Any = None) -> None:
        return None

    def on_presence(self, cb: Any) -> None:
        self._callbacks.append(cb)

    def remove_presence_callback(self, cb: Any) -> None:
        self._callbacks.remove(cb)

    def event(self, peer: str, event: str) -> None:
        self.presence[peer] = event
        for cb in list(self._callbacks):
            cb(peer, event)


class Refuser(Protocol):
    """Sends nothing and refuses the first document it gets, with a local input error."""

    name, title = "rollcall", "the roll call"

    def start(self) -> list[Send]:
        return []

    def on_message(self, env: Envelope) -> list[Send]:
        raise InputError(f"{env.sender!r} brought a document this party cannot use")


def _hub(*names: str) -> dict[str, HubParty]:
    hub: dict[str, HubParty] = {}
    for n in names:
        HubParty(hub, n)
    return hub


async def _all(hub: dict[str, HubParty], protos: dict[str, Protocol]) -> dict[str, Any]:
    async def one(name: str) -> Any:
        try:
            return await drive(hub[name], protos[name], session="s", timeout=5,  # type: ignore[arg-type]
                               watch=hub[name].peers)
        except Exception as exc:
            return exc

    results = await asyncio.gather(*(one(n) for n in protos))
    return dict(zip(protos, results, strict=True))


def _rollcalls(hub: dict[str, HubParty], docs: dict[str, Any]) -> dict[str, Protocol]:
    return {n: RollCall(n, hub[n].peers, docs.get(n, {"n": n})) for n in hub}


def test_a_run_announces_itself_and_finishes() -> None:
    hub = _hub("a", "b", "c")
    res = asyncio.run(_all(hub, _rollcalls(hub, {})))
    assert res["a"] == {"a": {"n": "a"}, "b": {"n": "b"}, "c": {"n": "c"}} == res["c"]
    starts = [e for e in hub["a"].sent if e.kind == START]
    assert sorted(e.recipient for e in starts) == ["b", "c"]
    assert len({CORE.decode(e, Start).run for e in starts}) == 1  # one run id per run


def test_a_local_error_is_told_to_every_peer_with_its_reason() -> None:
    hub = _hub("a", "b", "c")
    protos = {**_rollcalls(hub, {}), "a": Refuser()}
    res = asyncio.run(_all(hub, protos))
    assert isinstance(res["a"], InputError) and "cannot use" in str(res["a"])
    for peer in ("b", "c"):
        assert isinstance(res[peer], PeerAborted) and res[peer].peer == "a"
        assert str(res[peer]).startswith("'a' stopped the roll call: ")
        assert "brought a document this party cannot use" in res[peer].reason
    aborts = [e for e in hub["a"].sent if e.kind == ABORT]
    assert sorted(e.recipient for e in aborts) == ["b", "c"]
    # each abort names the run it stops, so it can never stop that peer's next run
    for e in aborts:
        (start,) = [s for s in hub[e.recipient].sent if s.kind == START and s.recipient == "a"]
        assert CORE.decode(e, Abort).to_run == CORE.decode(start, Start).run
    assert not [e for p in ("b", "c") for e in hub[p].sent if e.kind == ABORT]  # no echo


def test_an_abort_meant_for_an_earlier_run_is_dropped() -> None:
    hub = _hub("a", "b")
    stale = Abort("the roll call", "old trouble", b"r-a-old", b"r-b-old")  # for b's old run
    hub["b"].deliver(Envelope("a", "b", "s", ABORT, 0, CORE.encode(stale)))
    res = asyncio.run(_all(hub, _rollcalls(hub, {})))
    assert res["b"] == {"a": {"n": "a"}, "b": {"n": "b"}}


def test_an_abort_sent_before_the_run_started_still_stops_it() -> None:
    """A peer that refused before we started (and before it heard from us) is heard."""
    hub = _hub("a", "b")

    async def scenario() -> Any:
        await send_abort(hub["a"], ["b"], session="s", protocol="PSI",  # type: ignore[arg-type]
                         reason="1 duplicate IDs")
        with pytest.raises(PeerAborted, match="'a' stopped the roll call: 1 duplicate IDs"):
            await drive(hub["b"], RollCall("b", ["a"], {}), session="s",  # type: ignore[arg-type]
                        timeout=5, watch=["a"])

    asyncio.run(scenario())


def test_messages_of_a_peers_earlier_run_are_dropped() -> None:
    """a ran once, failed, and runs again: b, starting late, takes in only the new run."""
    hub = _hub("a", "b")
    roll = RollCall("a", ["b"], {"try": 1})
    old = [Envelope("a", "b", "s", START, 0, CORE.encode(Start(b"r1", "rollcall"))),
           Envelope("a", "b", "s", roll.start()[0].kind, 1, bytes(roll.start()[0].payload))]
    for env in old:
        hub["b"].deliver(env)

    async def scenario() -> Any:
        return await asyncio.gather(
            drive(hub["a"], RollCall("a", ["b"], {"try": 2}), session="s", timeout=5,  # type: ignore[arg-type]
                  watch=["b"]),
            drive(hub["b"], RollCall("b", ["a"], {}), session="s", timeout=5,  # type: ignore[arg-type]
                  watch=["a"]))

    _, res_b = asyncio.run(scenario())
    assert res_b["a"] == {"try": 2}  # not "answered twice", not the stale document


def test_a_restarted_peer_stops_the_run_and_the_others_are_told() -> None:
    hub = _hub("a", "b", "c")

    async def scenario() -> dict[str, Any]:
        protos = {"b": RollCall("b", ["a", "c"], {}), "c": RollCall("c", ["a", "b"], {})}
        task = asyncio.ensure_future(_all(hub, protos))  # a never answers: its process died
        await asyncio.sleep(0.05)
        hub["b"].event("a", "restarted")
        return await task

    res = asyncio.run(scenario())
    assert isinstance(res["b"], PeerRestarted) and res["b"].peer == "a"
    assert "'a' restarted its kernel (or process) during the roll call" in str(res["b"])
    assert "run the roll call again at every party" in str(res["b"])
    assert isinstance(res["c"], PeerAborted) and "'a' restarted" in str(res["c"])
    assert [e.recipient for e in hub["b"].sent if e.kind == ABORT] == ["c"]  # not to a


def test_a_peer_that_left_stops_the_run() -> None:
    hub = _hub("a", "b")

    async def scenario() -> None:
        task = asyncio.ensure_future(drive(hub["b"], RollCall("b", ["a"], {}), session="s",  # type: ignore[arg-type]
                                           timeout=5, watch=["a"]))
        await asyncio.sleep(0.05)
        hub["b"].event("a", "left")
        with pytest.raises(PeerLost, match=r"'a' left the room .* during the roll call"):
            await task

    asyncio.run(scenario())
