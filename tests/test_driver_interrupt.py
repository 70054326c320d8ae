"""Interrupting the blocking run() ("interrupt kernel") ends the run and tells the peers."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest
from test_driver import _hub

from fedlab_kit.net import driver
from fedlab_kit.net.session import Party
from fedlab_kit.protocol import Envelope, RollCall
from fedlab_kit.protocol.stop import ABORT, CORE, START, Abort, Start


def test_an_interrupted_run_keeps_running_in_the_party_loop() -> None:
    hub = _hub("a", "b")
    party = Party.__new__(Party)  # a Party whose session is the hub party b
    party._loop = asyncio.new_event_loop()
    party._thread = threading.Thread(target=party._loop.run_forever, daemon=True)
    party._thread.start()
    party.aio = hub["b"]  # type: ignore[assignment]
    try:
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        with pytest.raises(KeyboardInterrupt):  # the analyst interrupts a run waiting for a
            driver.run(party, RollCall("b", ["a"], {}), session="s", watch=["a"])
        tasks = asyncio.run_coroutine_threadsafe(_tasks(), party._loop).result(5)
        told = [e for e in hub["b"].sent if e.kind == ABORT]
        # a now runs; b runs again: the interrupted run takes a's messages
        roll = RollCall("a", ["b"], {"n": "a"}).start()[0]
        for env in (Envelope("a", "b", "s", START, 0, CORE.encode(Start(b"ra", "rollcall"))),
                    Envelope("a", "b", "s", roll.kind, 1, bytes(roll.payload))):
            party._loop.call_soon_threadsafe(hub["b"].deliver, env)
        again = driver.run(party, RollCall("b", ["a"], {}), session="s", timeout=1, watch=["a"])
        assert tasks == []  # the interrupted run ended in the party's loop too
        assert [e.recipient for e in told] == ["a"]  # and told its peer why
        assert "interrupted by its user" in CORE.decode(told[0], Abort).reason
        assert again["a"] == {"n": "a"}  # the next run takes a's messages
    finally:
        party._loop.call_soon_threadsafe(party._loop.stop)


async def _tasks() -> list[str]:
    return [repr(t.get_coro()) for t in asyncio.all_tasks() if t is not asyncio.current_task()]
