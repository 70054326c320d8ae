"""Tests of the sans-IO PeerLink: chunking, windowing, acks, resume, replay and restart.

A tiny in-test network (:class:`Net`) moves ``Outgoing`` frames between two links, and can
drop, delay or duplicate any of them. Frames are captured as immutable bytes when sent, like
a real transport would.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedlab_kit.errors import SecurityError
from fedlab_kit.net.frames import FrameType
from fedlab_kit.net.link import LinkEvents, Outgoing, PeerLink, new_instance_id
from fedlab_kit.protocol import Envelope

PASS, DROP, DUP, DELAY = "pass", "drop", "dup", "delay"
Fault = Callable[[str, Outgoing], str]  # (recipient name, frame) -> action


class Net:
    """Moves frames between two PeerLinks, optionally faulty."""

    def __init__(self, a: PeerLink, b: PeerLink) -> None:
        self.links = {a.me: a, b.me: b}
        self.pending: dict[str, deque[Outgoing]] = {a.me: deque(), b.me: deque()}
        self.delayed: list[tuple[str, Outgoing]] = []
        self.delivered: dict[str, list[Envelope]] = {a.me: [], b.me: []}
        self.restarts: dict[str, int] = {a.me: 0, b.me: 0}
        self.sent: list[tuple[str, Outgoing]] = []  # (recipient, frame), every frame ever sent

    def other(self, name: str) -> str:
        (peer,) = (n for n in self.links if n != name)
        return peer

    def send(self, sender: str, outs: list[Outgoing]) -> None:
        to = self.other(sender)
        for out in outs:
            frozen = Outgoing(out.header, bytes(out.data))
            self.pending[to].append(frozen)
            self.sent.append((to, frozen))

    def reconnect(self, name: str) -> None:
        self.send(name, [self.links[name].on_reconnect()])

    def replace(self, link: PeerLink) -> None:
        """A restarted process: a new incarnation takes over the name."""
        self.links[link.me] = link
        self.delivered[link.me] = []

    def pull(self, name: str, max_frames: int = 1 << 30) -> list[Outgoing]:
        outs = self.links[name].next_frames(max_frames)
        self.send(name, outs)
        return outs

    def deliver(self, to: str, frame: Outgoing) -> LinkEvents:
        ev = self.links[to].on_frame(frame.header, frame.data)
        self.delivered[to].extend(ev.delivered)
        self.restarts[to] += ev.peer_restarted
        self.send(to, ev.send)
        return ev

    def step(self, to: str) -> LinkEvents:
        return self.deliver(to, self.pending[to].popleft())

    def drain(self, to: str) -> None:
        while self.pending[to]:
            self.step(to)

    def run(self, fault: Fault | None = None, limit: int = 100_000) -> None:
        """Send and deliver until nothing moves any more."""
        for _ in range(limit):
            moved = False
            for name in self.links:
                moved |= bool(self.pull(name))
            for to in self.links:
                while self.pending[to]:
                    moved = True
                    frame = self.pending[to].popleft()
                    action = fault(to, frame) if fault else PASS
                    if action == DROP:
                        continue
                    if action == DELAY:
                        self.delayed.append((to, frame))
                        continue
                    self.deliver(to, frame)
                    if action == DUP:
                        self.deliver(to, frame)
            if not moved:
                return
        raise AssertionError("the links never went quiet")

    def release_delayed(self) -> None:
        delayed, self.delayed = self.delayed, []
        for to, frame in delayed:
            self.deliver(to, frame)

    def payloads(self, to: str) -> list[bytes]:
        return [bytes(e.payload) for e in self.delivered[to]]


def make_pair(chunk_size: int = 7, window: int = 64) -> tuple[PeerLink, PeerLink, Net]:
    a = PeerLink("a", "b", new_instance_id(), chunk_size=chunk_size, window=window)
    b = PeerLink("b", "a", new_instance_id(), chunk_size=chunk_size, window=window)
    return a, b, Net(a, b)


def connected_pair(chunk_size: int = 7, window: int = 64) -> tuple[PeerLink, PeerLink, Net]:
    a, b, net = make_pair(chunk_size, window)
    net.reconnect("a")
    net.reconnect("b")
    net.run()
    assert not a.paused and not b.paused
    return a, b, net


def data_frames(frames: list[Outgoing]) -> list[Outgoing]:
    return [f for f in frames if f.header.type == FrameType.DATA]


def msg_payload(tag: int, size: int) -> bytes:
    """Distinct, recognisable payload for message ``tag``."""
    return bytes((tag * 31 + i) % 251 for i in range(size))


# --------------------------------------------------------------------------- basics


def test_constructor_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        PeerLink("a", "b", b"i", chunk_size=0, window=10)
    with pytest.raises(ValueError):
        PeerLink("a", "b", b"i", chunk_size=8, window=7)


def test_paused_until_peer_resume() -> None:
    a, _, net = make_pair()
    a.queue(b"hello", session="s", kind="k")
    assert a.paused and a.next_frames() == []
    net.reconnect("a")
    assert a.next_frames() == []  # our own reconnect does not unpause us
    net.reconnect("b")
    net.run()
    assert net.payloads("b") == [b"hello"]


@pytest.mark.parametrize("direction", [("a", "b"), ("b", "a")])
def test_small_and_multichunk_messages_arrive_intact_in_order(
    direction: tuple[str, str],
) -> None:
    _, _, net = connected_pair(chunk_size=7, window=64)
    src, dst = direction
    sizes = [0, 1, 6, 7, 8, 13, 14, 15, 100, 333]
    sent = [msg_payload(i, n) for i, n in enumerate(sizes)]
    seqs = [
        net.links[src].queue(p, session=f"s{i}", kind=f"k{i}") for i, p in enumerate(sent)
    ]
    assert seqs == list(range(len(sizes)))
    net.run()
    got = net.delivered[dst]
    assert [bytes(e.payload) for e in got] == sent
    assert [e.seq for e in got] == seqs
    assert [(e.session, e.kind) for e in got] == [(f"s{i}", f"k{i}") for i in range(len(sizes))]
    assert all(e.sender == src and e.recipient == dst for e in got)
    assert net.delivered[src] == []
    assert net.links[src].idle and net.links[dst].idle


def test_both_directions_interleaved() -> None:
    a, b, net = connected_pair(chunk_size=5, window=20)
    to_b = [msg_payload(i, 3 * i + 1) for i in range(12)]
    to_a = [msg_payload(100 + i, 40 - 3 * i) for i in range(12)]
    for pa, pb in zip(to_b, to_a, strict=True):
        a.queue(pa, session="x", kind="d")
        b.queue(pb, session="x", kind="d")
    net.run()
    assert net.payloads("b") == to_b
    assert net.payloads("a") == to_a
    assert a.idle and b.idle


def test_empty_payload_is_one_frame_and_delivered() -> None:
    a, _, net = connected_pair()
    a.queue(b"", session="s", kind="empty")
    frames = net.pull("a")
    assert len(frames) == 1
    h = frames[0].header
    assert (h.type, h.chunk, h.n_chunks, h.total) == (FrameType.DATA, 0, 1, 0)
    net.run()
    assert [(bytes(e.payload), e.kind) for e in net.delivered["b"]] == [(b"", "empty")]
    assert a.idle


def test_chunk_headers_cover_the_payload() -> None:
    a, _, _ = connected_pair(chunk_size=7, window=1000)
    payload = msg_payload(1, 100)
    a.queue(payload, session="s", kind="k")
    frames = a.next_frames()
    assert [f.header.chunk for f in frames] == list(range(15))
    assert {(f.header.n_chunks, f.header.total, f.header.msg) for f in frames} == {(15, 100, 0)}
    assert b"".join(bytes(f.data) for f in frames) == payload
    assert all(len(f.data) == 7 for f in frames[:-1]) and len(frames[-1].data) == 2


def test_max_frames_limits_one_call() -> None:
    a, _, _ = connected_pair(chunk_size=7, window=1000)
    a.queue(msg_payload(1, 100), session="s", kind="k")
    assert len(a.next_frames(max_frames=4)) == 4
    assert [f.header.chunk for f in a.next_frames(max_frames=4)] == [4, 5, 6, 7]


# --------------------------------------------------------------------------- window


def test_window_bounds_frames_in_flight_until_acks_arrive() -> None:
    a, _, net = connected_pair(chunk_size=7, window=21)
    payload = msg_payload(3, 100)
    a.queue(payload, session="s", kind="k")
    first = net.pull("a")
    assert [f.header.chunk for f in first] == [0, 1, 2]  # 3 * 7 bytes == window
    assert net.pull("a") == []  # window full: nothing more until an ack
    net.drain("b")  # b receives the three chunks and acknowledges
    assert net.pull("a") == []  # acks not yet delivered to a
    net.drain("a")
    more = net.pull("a")
    assert more and more[0].header.chunk == 3
    net.run()
    assert net.payloads("b") == [payload]


@pytest.mark.parametrize(("chunk", "window"), [(7, 20), (7, 7), (5, 64), (3, 10)])
def test_bytes_in_flight_stay_bounded(chunk: int, window: int) -> None:
    """At any time, the unacknowledged bytes sent stay below window + one chunk."""
    a, _, net = connected_pair(chunk_size=chunk, window=window)
    sent = [msg_payload(i, n) for i, n in enumerate([50, 0, 1, 200, 9])]
    for p in sent:
        a.queue(p, session="s", kind="k")
    acked: tuple[int, int] = (0, 0)
    in_flight: list[tuple[tuple[int, int], int]] = []
    for _ in range(10_000):
        for f in net.pull("a"):
            in_flight.append(((f.header.msg, f.header.chunk), max(len(f.data), 1)))
        in_flight = [x for x in in_flight if x[0] >= acked]
        assert sum(n for _, n in in_flight) <= window + chunk - 1
        if not net.pending["b"] and not net.pending["a"]:
            break
        net.drain("b")
        for f in list(net.pending["a"]):
            if f.header.type == FrameType.ACK:
                acked = max(acked, (f.header.cursor_msg, f.header.cursor_chunk))
        net.drain("a")
    assert net.payloads("b") == sent
    assert a.idle


def test_idle_only_after_every_ack() -> None:
    a, _, net = connected_pair(chunk_size=7, window=64)
    assert a.idle and a.queued_bytes == 0
    a.queue(msg_payload(1, 20), session="s", kind="k")
    a.queue(msg_payload(2, 5), session="s", kind="k")
    assert not a.idle and a.queued_bytes == 25
    net.pull("a")
    net.drain("b")  # delivered, acks still travelling
    assert len(net.delivered["b"]) == 2
    assert not a.idle and a.queued_bytes == 25
    acks = list(net.pending["a"])
    assert acks and all(f.header.type == FrameType.ACK for f in acks)
    net.step("a")  # the first ack (end of message 0) frees message 0 only
    assert not a.idle and a.queued_bytes == 5
    net.drain("a")
    assert a.idle and a.queued_bytes == 0


# --------------------------------------------------------------------------- losses


def test_gap_in_a_message_is_recovered_without_reconnect() -> None:
    a, _, net = connected_pair(chunk_size=7, window=1000)
    payload = msg_payload(5, 70)
    a.queue(payload, session="s", kind="k")

    def lose_chunk_3_once(to: str, frame: Outgoing) -> str:
        h = frame.header
        if h.type == FrameType.DATA and h.chunk == 3 and not lost:
            lost.append(frame)
            return DROP
        return PASS

    lost: list[Outgoing] = []
    net.run(lose_chunk_3_once)
    assert lost
    assert net.payloads("b") == [payload]
    assert a.idle


def test_delayed_frame_arriving_after_the_resend_is_ignored() -> None:
    a, _, net = connected_pair(chunk_size=7, window=1000)
    payload = msg_payload(6, 40)
    a.queue(payload, session="s", kind="k")
    state = {"delayed": False}

    def delay_chunk_1(to: str, frame: Outgoing) -> str:
        h = frame.header
        if h.type == FrameType.DATA and h.chunk == 1 and not state["delayed"]:
            state["delayed"] = True
            return DELAY
        return PASS

    net.run(delay_chunk_1)
    assert net.payloads("b") == [payload]
    net.release_delayed()  # the original chunk 1 finally shows up: stale, ignored
    net.run()
    assert net.payloads("b") == [payload]
    assert a.idle


def _check_exactly_once(net: Net, sent: dict[str, list[bytes]]) -> None:
    for dst, expected in sent.items():
        got = net.delivered[dst]
        assert [e.seq for e in got] == list(range(len(got))), f"{dst}: seqs {[e.seq for e in got]}"
        assert [bytes(e.payload) for e in got] == expected, (
            f"{dst} received messages {[e.seq for e in got]} of {len(expected)}"
        )
    assert all(link.idle for link in net.links.values())


sizes_st = st.lists(st.integers(0, 40), min_size=0, max_size=6)
side_st = st.sampled_from(["a", "b", "both"])


def _queue_all(net: Net, sizes_ab: list[int], sizes_ba: list[int]) -> dict[str, list[bytes]]:
    sent = {
        "b": [msg_payload(i, n) for i, n in enumerate(sizes_ab)],
        "a": [msg_payload(50 + i, n) for i, n in enumerate(sizes_ba)],
    }
    for p in sent["b"]:
        net.links["a"].queue(p, session="s", kind="k")
    for p in sent["a"]:
        net.links["b"].queue(p, session="s", kind="k")
    return sent


def _reconnect(net: Net, side: str) -> None:
    for name in ("a", "b") if side == "both" else (side,):
        net.reconnect(name)
    net.run()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes_ab=sizes_st, sizes_ba=sizes_st, cut=st.integers(0, 60), side=side_st)
def test_connection_cut_then_reconnect_delivers_exactly_once(
    sizes_ab: list[int], sizes_ba: list[int], cut: int, side: str
) -> None:
    """Everything after the ``cut``-th frame is lost (a dropped connection), then resume."""
    _, _, net = connected_pair(chunk_size=7, window=24)
    sent = _queue_all(net, sizes_ab, sizes_ba)
    seen = [0]

    def cut_after(to: str, frame: Outgoing) -> str:
        seen[0] += 1
        return DROP if seen[0] > cut else PASS

    net.run(cut_after)
    _reconnect(net, side)
    _check_exactly_once(net, sent)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes_ab=sizes_st, sizes_ba=sizes_st,
    drops=st.sets(st.integers(0, 60), max_size=12), side=side_st,
)
def test_warm_link_arbitrary_losses_then_reconnect_deliver_exactly_once(
    sizes_ab: list[int], sizes_ba: list[int], drops: set[int], side: str
) -> None:
    """Losses at arbitrary points, once each side has received a message from the other."""
    _, _, net = connected_pair(chunk_size=7, window=24)
    warm = _queue_all(net, [3], [4])
    net.run()
    _check_exactly_once(net, warm)
    sent = _queue_all(net, sizes_ab, sizes_ba)
    sent = {k: warm[k] + sent[k] for k in sent}
    # message numbers continue after the warm-up message
    seen = [0]

    def lose(to: str, frame: Outgoing) -> str:
        seen[0] += 1
        return DROP if seen[0] - 1 in drops else PASS

    net.run(lose)
    _reconnect(net, side)
    _check_exactly_once(net, sent)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes_ab=sizes_st, sizes_ba=sizes_st,
    drops=st.sets(st.integers(0, 60), max_size=12), side=side_st,
)
def test_arbitrary_losses_then_reconnect_deliver_exactly_once(
    sizes_ab: list[int], sizes_ba: list[int], drops: set[int], side: str
) -> None:
    """Losses at arbitrary points of a fresh link, then a reconnect: nothing lost, no dup."""
    _, _, net = connected_pair(chunk_size=7, window=24)
    sent = _queue_all(net, sizes_ab, sizes_ba)
    seen = [0]

    def lose(to: str, frame: Outgoing) -> str:
        seen[0] += 1
        return DROP if seen[0] - 1 in drops else PASS

    net.run(lose)
    _reconnect(net, side)
    _check_exactly_once(net, sent)


def test_losing_the_first_message_of_a_fresh_link_is_not_silently_skipped() -> None:
    """The receiver has no cursor yet; message 0 is lost and message 1 arrives.

    Message 1 must not be delivered as if it were the first: the link guarantees in-order,
    exactly-once delivery, so message 0 must come first (after a resend or a reconnect).
    """
    a, _, net = connected_pair()
    a.queue(b"first", session="s", kind="k")
    a.queue(b"second", session="s", kind="k")

    def lose_msg0(to: str, frame: Outgoing) -> str:
        h = frame.header
        return DROP if h.type == FrameType.DATA and h.msg == 0 else PASS

    net.run(lose_msg0)
    assert net.payloads("b") in ([], [b"first", b"second"]), (
        f"b received {net.payloads('b')} although message 0 was lost; "
        f"a.idle={a.idle} (a believes message 0 was acknowledged)"
    )
    net.reconnect("a")
    net.run()
    assert net.payloads("b") == [b"first", b"second"]


# --------------------------------------------------------------------------- replay


def test_duplicate_frame_in_same_epoch_raises_replayed() -> None:
    a, _, net = connected_pair(chunk_size=7, window=1000)
    a.queue(msg_payload(1, 30), session="s", kind="k")
    frames = net.pull("a")
    net.deliver("b", frames[0])
    net.deliver("b", frames[1])
    with pytest.raises(SecurityError, match="replayed") as info:
        net.deliver("b", frames[1])
    assert info.value.peer == "a"
    assert "'a'" in str(info.value)


def test_duplicate_single_chunk_message_raises_replayed() -> None:
    a, _, net = connected_pair()
    a.queue(b"once", session="s", kind="k")
    a.queue(b"twice", session="s", kind="k")
    frames = net.pull("a")
    net.deliver("b", frames[0])
    with pytest.raises(SecurityError, match="replayed"):
        net.deliver("b", frames[0])
    assert net.payloads("b") == [b"once"]


def test_duplicated_frame_through_the_net_aborts() -> None:
    a, _, net = connected_pair()
    a.queue(b"x" * 20, session="s", kind="k")

    def dup_second_chunk(to: str, frame: Outgoing) -> str:
        h = frame.header
        return DUP if h.type == FrameType.DATA and h.chunk == 1 else PASS

    with pytest.raises(SecurityError, match="replayed"):
        net.run(dup_second_chunk)


def test_frame_from_a_future_epoch_raises() -> None:
    a, _, net = connected_pair()
    a.queue(b"data", session="s", kind="k")
    (frame,) = net.pull("a")
    forged = msgspec.structs.replace(frame.header, epoch=frame.header.epoch + 5)
    with pytest.raises(SecurityError, match="future epoch"):
        net.links["b"].on_frame(forged, frame.data)


def test_ack_of_a_chunk_never_sent_raises() -> None:
    a, _, net = connected_pair()
    a.queue(b"data", session="s", kind="k")
    net.run()
    ack = next(f for to, f in net.sent if to == "a" and f.header.type == FrameType.ACK)
    forged = msgspec.structs.replace(ack.header, cursor_msg=ack.header.cursor_msg + 3)
    with pytest.raises(SecurityError, match="never sent"):
        a.on_frame(forged, b"")


def test_inconsistent_chunk_header_raises() -> None:
    a, b, net = connected_pair()
    a.queue(b"data", session="s", kind="k")
    (frame,) = net.pull("a")
    forged = msgspec.structs.replace(frame.header, n_chunks=0)
    with pytest.raises(SecurityError):
        b.on_frame(forged, frame.data)


def test_wrong_length_message_raises() -> None:
    a, b, net = connected_pair(chunk_size=7)
    a.queue(b"x" * 14, session="s", kind="k")
    f0, f1 = net.pull("a")
    b.on_frame(f0.header, f0.data)
    with pytest.raises(SecurityError, match="wrong length"):
        b.on_frame(f1.header, b"x" * 8)


def test_a_huge_announced_size_allocates_nothing() -> None:
    """The attack: an authenticated peer's first chunk announces a message of 1 TiB. The
    receiver refuses it before allocating; a size within the cap only takes the memory of
    the chunks that really arrive."""
    from fedlab_kit.net.link import MAX_MESSAGE

    a, b, net = connected_pair(chunk_size=7)
    a.queue(b"x" * 14, session="s", kind="k")
    f0, _f1 = net.pull("a")
    huge = msgspec.structs.replace(f0.header, total=1 << 40, n_chunks=(1 << 40) // 7)
    with pytest.raises(SecurityError, match="announces 1099511627776 bytes"):
        b.on_frame(huge, f0.data)
    a, b, net = connected_pair(chunk_size=7)
    a.queue(b"x" * 14, session="s", kind="k")
    f0, _f1 = net.pull("a")
    big = msgspec.structs.replace(f0.header, total=MAX_MESSAGE, n_chunks=MAX_MESSAGE // 7)
    b.on_frame(big, f0.data)
    assert b._inbound is not None and len(b._inbound.buf) == 7  # what arrived, not 4 GiB


# --------------------------------------------------------------------------- stale frames


def test_stale_data_frames_from_before_a_resume_are_ignored() -> None:
    a, b, net = connected_pair(chunk_size=7, window=1000)
    old_msg = msg_payload(1, 20)
    a.queue(old_msg, session="s", kind="k")
    net.run()
    assert net.payloads("b") == [old_msg]
    # message 1 is sent but lost with the connection
    new_msg = msg_payload(2, 20)
    a.queue(new_msg, session="s", kind="k")
    lost = net.pull("a")
    net.pending["b"].clear()
    old_frames = [f for to, f in net.sent if to == "b" and f.header.type == FrameType.DATA]
    net.reconnect("b")
    net.run()
    assert net.payloads("b") == [old_msg, new_msg]
    # the whole history of data frames, delivered again after the resume: all stale
    for frame in old_frames:
        ev = b.on_frame(frame.header, frame.data)
        assert ev.delivered == [] and not ev.peer_restarted
    assert lost and all(f.header.epoch < b._rx_epoch for f in lost)
    net.run()
    assert net.payloads("b") == [old_msg, new_msg]
    assert a.idle


STALE_KINDS = {
    "ack": lambda h: h.type == FrameType.ACK,
    "resume-reply": lambda h: h.type == FrameType.RESUME and h.reply,
    "resume": lambda h: h.type == FrameType.RESUME and not h.reply,
}


@pytest.mark.parametrize("kind", sorted(STALE_KINDS))
def test_stale_control_frames_from_before_a_resume_are_ignored(kind: str) -> None:
    """Old ACK / RESUME frames replayed after a resume must not stall or corrupt the link."""
    a, b, net = connected_pair(chunk_size=7, window=1000)
    a.queue(msg_payload(1, 20), session="s", kind="k")
    b.queue(msg_payload(2, 9), session="s", kind="k")
    net.run()
    history = [(to, f) for to, f in net.sent if STALE_KINDS[kind](f.header)]
    assert history
    net.reconnect("a")
    net.reconnect("b")
    net.run()
    for to, frame in history:
        net.deliver(to, frame)
    net.run()
    a.queue(b"after", session="s", kind="k")
    b.queue(b"after too", session="s", kind="k")
    net.run()
    assert net.payloads("b") == [msg_payload(1, 20), b"after"], "a's new message never arrived"
    assert net.payloads("a") == [msg_payload(2, 9), b"after too"], "b's new message never arrived"
    assert a.idle and b.idle


# --------------------------------------------------------------------------- restarts


def test_peer_restart_gets_every_unacknowledged_message() -> None:
    a, _, net = connected_pair(chunk_size=7, window=1000)
    msgs = [msg_payload(i, 10 + i) for i in range(6)]
    for p in msgs[:2]:
        a.queue(p, session="s", kind="k")
    net.run()  # messages 0, 1 delivered and acknowledged
    assert net.payloads("b") == msgs[:2]
    for p in msgs[2:]:
        a.queue(p, session="s", kind="k")
    frames = net.pull("a")
    # message 2 reaches the old b, but its ack is lost; messages 3-5 are lost
    for f in frames:
        if f.header.msg == 2:
            net.deliver("b", f)
    net.pending["b"].clear()
    net.pending["a"].clear()
    assert net.payloads("b") == msgs[:3]
    old_b_frames = [f for to, f in net.sent if to == "a"]

    new_b = PeerLink("b", "a", new_instance_id(), chunk_size=7, window=1000)
    net.replace(new_b)
    net.reconnect("b")
    net.run()
    assert net.restarts["a"] == 1  # a saw peer_restarted exactly once
    got = net.delivered["b"]
    assert [bytes(e.payload) for e in got] == msgs[2:]
    assert [e.seq for e in got] == [2, 3, 4, 5]
    assert a.idle
    # frames of the old incarnation still in flight are ignored
    for f in old_b_frames:
        ev = a.on_frame(f.header, f.data)
        assert ev.delivered == [] and not ev.peer_restarted
    # the new incarnation numbers its own messages from 0 and a accepts them
    new_b.queue(b"from the new b", session="s", kind="k")
    net.run()
    assert [(e.seq, bytes(e.payload)) for e in net.delivered["a"]] == [(0, b"from the new b")]


def test_sender_restart_is_seen_and_new_messages_flow() -> None:
    old_a, _, net = connected_pair()
    old_a.queue(b"from old a", session="s", kind="k")
    net.run()
    new_a = PeerLink("a", "b", new_instance_id(), chunk_size=7, window=64)
    net.replace(new_a)
    new_a.queue(b"from new a", session="s", kind="k")
    net.reconnect("a")
    net.run()
    assert net.restarts["b"] == 1
    assert [(e.seq, bytes(e.payload)) for e in net.delivered["b"]] == [
        (0, b"from old a"), (0, b"from new a"),
    ]
    assert new_a.idle


def test_a_party_that_only_joined_and_left_is_not_a_restart() -> None:
    """``fedlab ping`` joins, exchanges resumes only, and leaves; the party's notebook
    joining next is a newcomer, not a restart (nothing was lost). Once data has flowed, the
    next incarnation is a restart again."""
    _, _, net = connected_pair()  # a: the ping, resumes exchanged, no data
    notebook = PeerLink("a", "b", new_instance_id(), chunk_size=7, window=64)
    net.replace(notebook)
    net.reconnect("a")
    net.run()
    assert net.restarts["b"] == 0
    notebook.queue(b"hello", session="s", kind="k")
    net.run()
    net.replace(PeerLink("a", "b", new_instance_id(), chunk_size=7, window=64))
    net.reconnect("a")
    net.run()
    assert net.restarts["b"] == 1


def test_peer_restart_mid_message() -> None:
    a, _, net = connected_pair(chunk_size=7, window=1000)
    payload = msg_payload(9, 50)
    a.queue(payload, session="s", kind="k")
    frames = net.pull("a")
    for f in frames[:3]:
        net.deliver("b", f)  # the old b got a partial message, then died
    net.pending["b"].clear()
    net.pending["a"].clear()
    net.replace(PeerLink("b", "a", os.urandom(8), chunk_size=7, window=1000))
    net.reconnect("b")
    net.run()
    assert net.payloads("b") == [payload]
    assert a.idle


# --------------------------------------------------------------------------- routing


def test_misrouted_frames_raise() -> None:
    a, b, net = connected_pair()
    a.queue(b"data", session="s", kind="k")
    (frame,) = net.pull("a")
    to_c = msgspec.structs.replace(frame.header, recipient="c")
    with pytest.raises(SecurityError, match="misrouted") as info:
        b.on_frame(to_c, frame.data)
    assert info.value.peer == "a"
    from_c = msgspec.structs.replace(frame.header, sender="c")
    with pytest.raises(SecurityError, match="misrouted"):
        b.on_frame(from_c, frame.data)
    # a frame of our own sent back to us
    with pytest.raises(SecurityError, match="misrouted"):
        a.on_frame(frame.header, frame.data)
    # the genuine frame is still accepted afterwards
    assert [bytes(e.payload) for e in b.on_frame(frame.header, frame.data).delivered] == [
        b"data"
    ]
