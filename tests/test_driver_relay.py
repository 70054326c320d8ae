"""Review of the driver over a real in-process relay: the flush at the end of a run."""

from __future__ import annotations

import asyncio

import pytest
from test_relay_inprocess import close_all, eventually, join, relay, room, run

from fedlab_kit.net.driver import drive
from fedlab_kit.protocol import RollCall

pytestmark = pytest.mark.timeout(60)


def test_a_finished_run_does_not_wait_for_a_peer_outside_it() -> None:
    """a and b run a roll call in a room of three; c left earlier with a message from a
    unacknowledged. The run is done, but drive()'s final flush waits for c and raises."""

    async def main() -> None:
        async with relay() as server:
            inv, ids = room(server, "rf", "a", "b", "c")
            a, b, c = [await join(ids[n], inv) for n in "abc"]
            await c.close(flush_timeout=1)
            await eventually(lambda: a.presence["c"] == "left", what="c left")
            await a.send("c", b"too late", session="other")
            try:
                res = await asyncio.gather(
                    drive(a, RollCall("a", ["b"], {}), session="s", timeout=2, watch=["b"]),
                    drive(b, RollCall("b", ["a"], {}), session="s", timeout=2, watch=["a"]))
                assert res[0]["b"] == {}
            finally:
                await close_all(a, b)

    run(main())
