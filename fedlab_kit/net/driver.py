"""The driver: runs a sans-IO protocol over a party's relay session, and the one way to stop.

:func:`drive` moves a protocol's messages over an :class:`~fedlab_kit.net.session.AsyncParty`
and runs its :class:`~fedlab_kit.protocol.Compute` requests in an executor. Every run
announces itself to its peers (``core/start`` with a fresh run id) before its first message,
so messages left over from a peer's earlier, failed run of the same session are recognised
and dropped.

Stopping, whatever the protocol:

- a local error inside the run (bad input, a peer breaking the protocol, a refused budget)
  is sent to the watched peers as ``core/abort`` with the reason, then raised here;
- a received abort raises :class:`~fedlab_kit.errors.PeerAborted`, naming the peer and
  quoting its reason (and is not echoed);
- a watched peer that leaves raises :class:`~fedlab_kit.errors.PeerLost`, one whose process
  is replaced by a new one :class:`~fedlab_kit.errors.PeerRestarted`; the other peers are
  told, so every party stops within seconds and can run the protocol again at once.

Errors found before a run starts (e.g. checks of the input) go through :func:`stopping`,
which tells the peers in the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections import deque
from collections.abc import Hashable, Iterable, Iterator
from concurrent.futures import Executor
from typing import Any

from ..errors import FedlabError, PeerAborted, PeerError, PeerLost, PeerRerun, PeerRestarted
from ..protocol.core import Action, Compute, ProgressCallback, Protocol, Send
from ..protocol.envelope import Envelope
from ..protocol.stop import ABORT, CORE, MAX_REASON, START, Abort, Start
from .session import AsyncParty, Party

log = logging.getLogger("fedlab.driver")
LOST_GRACE = 1.0  # seconds to take in what a departed peer sent before it left
ABORT_FLUSH = 5.0  # seconds to wait for the peers to acknowledge an abort


def reason_of(exc: BaseException) -> str:
    """An error as a peer should read it."""
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, FedlabError) else f"{type(exc).__name__}: {text}"


def _latest_run(party: AsyncParty, peer: str, session: str,
                seen: dict[str, bytes] | None) -> bytes:
    """The run of ``peer`` an abort stops: its newest start still waiting to be received,
    else the one taken in during our current run (``seen``), else none (empty: an abort
    for whatever run of the peer comes next)."""
    for env in reversed(party.waiting(sender=peer, session=session, kind=START)):
        with contextlib.suppress(FedlabError):
            return bytes(CORE.decode(env, Start).run)
    return (seen or {}).get(peer, b"")


async def send_abort(party: AsyncParty, peers: Iterable[str], *, session: str,
                     protocol: str, reason: str, run: bytes = b"",
                     seen: dict[str, bytes] | None = None) -> None:
    """Tell ``peers`` that this party stopped ``protocol`` in ``session``, and why; waits (a
    few seconds at most) until they acknowledged it. Never raises: the error to show is ours.
    ``seen``: the peers' run ids taken in during the run that stops, if any."""
    told = []
    for peer in peers:
        msg = Abort(protocol, reason[:MAX_REASON], run, _latest_run(party, peer, session, seen))
        with contextlib.suppress(Exception):
            await party.send(peer, CORE.encode(msg), kind=ABORT, session=session)
            told.append(peer)
    if told:
        with contextlib.suppress(Exception):
            await party.flush(ABORT_FLUSH, peers=told)


def abort_peers(party: Party, peers: Iterable[str], *, session: str, protocol: str,
                reason: str) -> None:
    """Blocking :func:`send_abort` for a :class:`~fedlab_kit.net.session.Party`."""
    with contextlib.suppress(Exception):
        party.run(send_abort(party.aio, list(peers), session=session, protocol=protocol,
                             reason=reason), ABORT_FLUSH + 5)


class Stopping:
    """Where a multi-step job is; an error tells the peers in ``session`` (see
    :func:`stopping`). Update ``session`` as the job moves on to the next protocol."""

    def __init__(self, session: str) -> None:
        self.session = session


@contextlib.contextmanager
def stopping(party: Any, peers: Iterable[str], *, session: str,
             protocol: str) -> Iterator[Stopping]:
    """On an error raised here (outside or around :func:`run`), tell ``peers`` why this party
    stops, so their runs in the current session end with :class:`PeerAborted` instead of
    waiting for a timeout. Errors from peers are not echoed; errors inside a run were told
    by the driver already. ``party`` may be None (nothing to tell)."""
    where = Stopping(session)
    try:
        yield where
    except BaseException as exc:
        told = getattr(exc, "_fedlab_told", False)
        if isinstance(party, Party) and not told and not isinstance(exc, PeerError):
            abort_peers(party, peers, session=where.session, protocol=protocol,
                        reason=reason_of(exc))
        raise


async def drive(
    party: AsyncParty, protocol: Protocol, *, session: str | None = None,
    timeout: float | None = None, progress: ProgressCallback | None = None,
    executor: Executor | None = None, max_computing: int = 8,
    watch: Iterable[str] = (),
) -> Any:
    """Run ``protocol`` over ``party`` until it is done; returns its result.

    :class:`Compute` requests run in ``executor`` (a process pool for CPU-bound work; the
    default thread pool otherwise), at most ``max_computing`` at a time, overlapping with
    network traffic. ``timeout`` bounds each wait for a message while nothing is computing.
    ``watch`` names the peers the run depends on: they are told when this run stops on an
    error, and their leaving or restarting stops it (a peer that is only "lost" may come
    back with its state, and the links resume).
    """
    session = session or f"{protocol.name}-{uuid.uuid4().hex[:12]}"
    name = protocol.title or protocol.name  # as an analyst reads it: "PSI"
    run_id = os.urandom(8)
    loop = asyncio.get_running_loop()
    backlog: deque[Compute] = deque()
    computing: dict[asyncio.Future[Any], Hashable] = {}
    watched = sorted(set(watch))
    announced: set[str] = set()  # peers told of this run
    seen: dict[str, bytes] = {}  # peer -> the run id of its current run, taken in here
    departed: list[tuple[str, str]] = []  # peers the run cannot do without, gone
    presence: deque[tuple[str, str]] = deque()  # presence events not yet handled
    departed_event = asyncio.Event()
    start_msg = CORE.encode(Start(run_id, protocol.name))

    def gone() -> set[str]:
        return getattr(protocol, "gone", set())

    def on_presence(peer: str, event: str) -> None:
        if peer in watched and event in ("left", "lost", "restarted"):
            presence.append((peer, event))
            departed_event.set()

    async def departures() -> None:
        """Tell the protocol of the peers that left; those it cannot do without stop the run
        ("lost", a heartbeat or a broken connection, may be transient: links resume)."""
        while presence:
            peer, event = presence.popleft()
            if peer in gone():
                continue
            actions = protocol.on_departed(peer, event)
            if actions is not None:
                await act(actions)
            elif event != "lost":
                departed.append((peer, event))

    async def announce(peer: str) -> None:
        if peer not in announced:
            announced.add(peer)
            await party.send(peer, start_msg, kind=START, session=session)

    async def act(actions: Iterable[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                await announce(a.to)
                await party.send(a.to, a.payload, kind=a.kind, session=session)
            else:
                backlog.append(a)
        while backlog and len(computing) < max_computing:
            job = backlog.popleft()
            computing[loop.run_in_executor(executor, job.fn, *job.args)] = job.key

    def take(env: Envelope) -> bool:
        """Driver messages and stale ones are handled here; True: give it to the protocol."""
        if env.sender in gone():
            log.debug("%s: dropped %r from %s, which the run went on without", party.name,
                      env.kind, env.sender)
            return False
        if env.kind == START:
            start = CORE.decode(env, Start)
            if env.sender in seen and bytes(start.run) != seen[env.sender]:
                # the peer left this run without a word and started anew: that start is
                # for our next run
                party.unrecv(env)
                raise PeerRerun(name, env.sender)
            if not party.waiting(sender=env.sender, session=session, kind=START):
                seen[env.sender] = bytes(start.run)  # else a newer run is queued
            return False
        if env.kind == ABORT:
            abort = CORE.decode(env, Abort)
            newer = party.waiting(sender=env.sender, session=session, kind=START)
            if (abort.to_run and abort.to_run != run_id) or (not abort.to_run and newer):
                log.debug("%s: dropped an abort from %s meant for an earlier run",
                          party.name, env.sender)
                return False
            raise PeerAborted(name, env.sender, str(abort.reason)[:MAX_REASON])
        if env.sender not in seen:
            log.debug("%s: dropped %r from %s's earlier run", party.name, env.kind, env.sender)
            return False
        return True

    party.on_presence(on_presence)
    for peer in watched:  # a peer that left before we started watching
        if party.presence.get(peer) == "left":
            on_presence(peer, "left")
    departed_task = asyncio.ensure_future(departed_event.wait())
    receiving: asyncio.Future[Envelope] | None = None
    grace_until: float | None = None  # after a peer left: take in what it sent until then
    try:
        for peer in watched:
            await announce(peer)
        await act(protocol.start())
        while not protocol.done:
            if departed_task.done():
                departed_event.clear()
                departed_task = asyncio.ensure_future(departed_event.wait())
                await departures()
                if protocol.done:
                    break
            if receiving is None:
                receiving = asyncio.ensure_future(party.recv(session=session))
            restarted = [p for p, e in departed if e == "restarted"]
            if restarted:  # whatever arrives now is from its new process
                raise PeerRestarted(name, restarted[0])
            if departed and grace_until is None:
                grace_until = loop.time() + LOST_GRACE
            wait = [receiving, *computing] if departed else [receiving, departed_task,
                                                              *computing]
            limit = (max(0.0, grace_until - loop.time()) if grace_until is not None
                     else None if computing else timeout)
            done, _ = await asyncio.wait(wait, timeout=limit,
                                         return_when=asyncio.FIRST_COMPLETED)
            if departed_task in done:
                continue  # decided at the top: restarted now, or left after the grace
            if not done:
                if grace_until is not None:
                    raise PeerLost(name, *departed[0])
                actions = protocol.on_timeout()
                if actions is not None:
                    await act(actions)
                    continue
                raise TimeoutError(f"{name}: no message from the peers within {timeout} s "
                                   f"(waiting for {', '.join(watched) or 'the peers'})")
            for fut in done:
                if fut is receiving:
                    receiving = None
                    env = fut.result()
                    if take(env):
                        await act(protocol.on_message(env))
                else:
                    await act(protocol.on_computed(computing.pop(fut), fut.result()))
            if progress is not None:
                progress(name, *protocol.progress())
    except BaseException as exc:
        # not told: peers that left or were left behind, and a peer that reran (its new run
        # is not ours)
        away = {p for p, _ in departed} | gone()
        if isinstance(exc, PeerRerun):
            away.add(exc.peer)
        if not isinstance(exc, PeerAborted):
            reason = ("it was interrupted by its user" if isinstance(exc, asyncio.CancelledError
                                                                     | KeyboardInterrupt)
                      else reason_of(exc))
            await send_abort(party, [p for p in watched if p not in away], session=session,
                             protocol=name, reason=reason, run=run_id, seen=seen)
        with contextlib.suppress(Exception):
            exc._fedlab_told = True  # type: ignore[attr-defined]
        raise
    finally:
        party.remove_presence_callback(on_presence)
        if (receiving is not None and receiving.done() and not receiving.cancelled()
                and receiving.exception() is None):
            party.unrecv(receiving.result())  # taken from the inbox, never handled
        pending = [f for f in (departed_task, receiving, *computing) if f is not None]
        for fut in pending:
            fut.cancel()
        with contextlib.suppress(BaseException):  # let them end before we return
            await asyncio.wait(pending, timeout=1)
    # acknowledgements from the peers of this run (not from others in the room)
    await party.flush(timeout, peers=[p for p in announced if party.presence.get(p) != "left"
                                      and p not in gone()])
    return protocol.result


def run(party: Party, protocol: Protocol, *, session: str | None = None,
        timeout: float | None = None, progress: ProgressCallback | None = None,
        executor: Executor | None = None, watch: Iterable[str] = ()) -> Any:
    """Blocking :func:`drive` for a :class:`~fedlab_kit.net.session.Party`."""
    return party.run(drive(party.aio, protocol, session=session, timeout=timeout,
                           progress=progress, executor=executor, watch=watch))
