"""Races and hangs of the driver (found in review), on the in-memory hub of test_driver."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_driver import _all, _hub, _rollcalls

from fedlab_kit.errors import PeerAborted, PeerRerun, PeerRestarted
from fedlab_kit.net.driver import drive, send_abort
from fedlab_kit.protocol import Envelope, LocalNetwork, Protocol, RollCall, Send
from fedlab_kit.protocol.core import Compute
from fedlab_kit.protocol.stop import ABORT, CORE, START, Abort, Start


def _doc(sender: str, to: str, seq: int, info: Any) -> Envelope:
    s = RollCall(sender, [to], info).start()[0]
    return Envelope(sender, to, "s", s.kind, seq, bytes(s.payload))


def _start(sender: str, to: str, seq: int, run: bytes) -> Envelope:
    return Envelope(sender, to, "s", START, seq, CORE.encode(Start(run, "rollcall")))


def test_prerun_refusal_after_an_earlier_run_is_ignored() -> None:
    """Run 1 of the session succeeds. In the rerun, b refuses before its run (stopping()):
    its abort names a's *previous* run id (party.runs), so a's new run drops it and waits
    for b until its timeout instead of stopping with b's reason."""
    hub = _hub("a", "b")
    asyncio.run(_all(hub, _rollcalls(hub, {})))  # run 1: both fine; b.runs knows a's r1

    async def scenario() -> None:
        await send_abort(hub["b"], ["a"], session="s", protocol="the roll call",  # type: ignore[arg-type]
                         reason="1 duplicate IDs")
        with pytest.raises(PeerAborted, match="1 duplicate IDs"):
            await drive(hub["a"], RollCall("a", ["b"], {}), session="s",  # type: ignore[arg-type]
                        timeout=1, watch=["b"])

    asyncio.run(scenario())


def test_start_taken_by_our_dying_run_makes_the_next_run_drop_the_peer() -> None:
    """a, b, c. a's run 1 died (c aborted it; PeerAborted is not echoed to b) and a started
    run 2 at once. b's run 1 must not take in a's new start (it stops: a reran), so that b's
    run 2 gets a's run-2 document rather than dropping it as stale."""
    hub = _hub("a", "b", "c")
    b = hub["b"]

    async def scenario() -> Any:
        run1 = asyncio.ensure_future(drive(b, RollCall("b", ["a", "c"], {}), session="s",  # type: ignore[arg-type]
                                           timeout=5, watch=["a", "c"]))
        b.deliver(_start("a", "b", 0, b"a-run-1"))
        b.deliver(_doc("a", "b", 1, {"try": 1}))
        await asyncio.sleep(0.05)
        (b_start,) = [e for e in b.sent if e.kind == START and e.recipient == "c"]
        b_run1 = CORE.decode(b_start, Start).run
        b.deliver(_start("a", "b", 2, b"a-run-2"))  # a's run 2 ...
        b.deliver(Envelope("c", "b", "s", ABORT, 0, CORE.encode(
            Abort("the roll call", "c refuses", b"c-run-1", b_run1))))
        b.deliver(_doc("a", "b", 3, {"try": 2}))  # ... and its document, after c's abort
        with pytest.raises(PeerRerun, match="'a' started the roll call again"):
            await run1
        assert not [e for e in b.sent if e.kind == ABORT and e.recipient == "a"]  # its new
        # run is left alone
        b.deliver(_start("c", "b", 1, b"c-run-2"))
        b.deliver(_doc("c", "b", 2, {"n": "c"}))
        return await drive(b, RollCall("b", ["a", "c"], {}), session="s",  # type: ignore[arg-type]
                           timeout=1, watch=["a", "c"])

    assert asyncio.run(scenario())["a"] == {"try": 2}


def test_envelope_received_with_a_restart_is_lost() -> None:
    """a's process is replaced: its new process's start and document arrive together with
    the 'restarted' event. Run 1 raises PeerRestarted but has already taken a's new start
    out of the inbox and drops it; run 2 then takes a's document for stale and times out."""
    hub = _hub("a", "b")
    b = hub["b"]

    async def scenario() -> Any:
        run1 = asyncio.ensure_future(drive(b, RollCall("b", ["a"], {}), session="s",  # type: ignore[arg-type]
                                           timeout=5, watch=["a"]))
        await asyncio.sleep(0.05)  # a's old process never answered
        b.event("a", "restarted")
        b.deliver(_start("a", "b", 0, b"a-new-process"))
        b.deliver(_doc("a", "b", 1, {"new": True}))
        with pytest.raises(PeerRestarted):
            await run1
        return await drive(b, RollCall("b", ["a"], {}), session="s",  # type: ignore[arg-type]
                           timeout=1, watch=["a"])

    assert asyncio.run(scenario())["a"] == {"new": True}


class _Chain(Protocol):
    """A protocol doing n computations one after the other."""

    name = "chain"

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def start(self) -> list[Any]:
        return [Compute(0, abs, (0,))]

    def on_message(self, env: Envelope) -> list[Send]:
        return []

    def on_computed(self, key: Any, result: Any) -> list[Any]:
        if key + 1 == self.n:
            self.done, self.result = True, key
            return []
        return [Compute(key + 1, abs, (0,))]


def test_local_network_many_chained_computations() -> None:
    assert LocalNetwork({"a": _Chain(5000)}).run() == {"a": 4999}


class _Orderer(Protocol):
    """a: one computation and message m1 at the start, message m2 once computed."""

    name = "order"

    def __init__(self, me: str) -> None:
        super().__init__()
        self.me, self.got = me, []  # type: list[str]

    def start(self) -> list[Any]:
        if self.me == "a":
            self.done = True
            return [Compute("k", abs, (0,)), Send("b", "order/m", b"m1")]
        return []

    def on_computed(self, key: Any, result: Any) -> list[Any]:
        return [Send("b", "order/m", b"m2")]

    def on_message(self, env: Envelope) -> list[Send]:
        self.got.append(bytes(env.payload).decode())
        self.done = len(self.got) == 2
        return []


def test_local_network_sends_in_the_drivers_order() -> None:
    protos = {"a": _Orderer("a"), "b": _Orderer("b")}
    LocalNetwork(protos).run()  # type: ignore[arg-type]
    assert protos["b"].got == ["m1", "m2"]  # the driver sends m1 first, then computes


def test_a_roll_call_alone_finishes() -> None:
    assert LocalNetwork({"a": RollCall("a", [], {"x": 1})}).run() == {"a": {"a": {"x": 1}}}
