"""Tests of the party <-> relay wire format and the incremental FrameDecoder."""

from __future__ import annotations

import asyncio
import struct

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlab_kit.net.relay import wire
from fedlab_kit.net.relay.wire import FrameDecoder, T, WireError

NAMES = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
BODIES = st.binary(max_size=300)
SEQS = st.integers(0, 2**64 - 1)


def _controls() -> st.SearchStrategy[tuple[T, msgspec.Struct]]:
    challenge = st.builds(
        wire.Challenge, st.integers(0, 10), st.binary(max_size=40), st.text(max_size=20),
        st.integers(0, 1 << 30),
    ).map(lambda m: (T.CHALLENGE, m))
    hello = st.builds(
        wire.Hello, st.integers(0, 5), NAMES, NAMES,
        st.dictionaries(NAMES, st.binary(min_size=32, max_size=32), max_size=4),
        st.binary(max_size=64), st.binary(max_size=8), st.text(max_size=16), SEQS,
    ).map(lambda m: (T.HELLO, m))
    welcome = st.builds(
        wire.Welcome, st.text(max_size=16), st.lists(NAMES, max_size=4), st.integers(0, 1 << 30)
    ).map(lambda m: (T.WELCOME, m))
    error = st.builds(wire.Error, st.text(max_size=20), st.text(max_size=80), st.booleans()).map(
        lambda m: (T.ERROR, m)
    )
    presence = st.builds(
        wire.Presence, NAMES, st.sampled_from(["joined", "left", "lost"])
    ).map(lambda m: (T.PRESENCE, m))
    return st.one_of(challenge, hello, welcome, error, presence)


CONTROL_CLS = {
    T.CHALLENGE: wire.Challenge, T.HELLO: wire.Hello, T.WELCOME: wire.Welcome,
    T.ERROR: wire.Error, T.PRESENCE: wire.Presence,
}


@st.composite
def frames(draw: st.DrawFn) -> tuple[bytes, tuple]:
    """One encoded frame and what decoding it must give back (type + parsed content)."""
    which = draw(st.sampled_from(["control", "send", "deliver", "ack", "ping", "pong", "raw"]))
    if which == "control":
        kind, msg = draw(_controls())
        return wire.control(kind, msg), (kind, msg)
    if which == "send":
        name, body = draw(NAMES), draw(BODIES)
        return wire.send_head(name, len(body)) + body, (T.SEND, name, body)
    if which == "deliver":
        seq, name, body = draw(SEQS), draw(NAMES), draw(BODIES)
        return wire.deliver_head(seq, name, len(body)) + body, (T.DELIVER, seq, name, body)
    if which == "ack":
        seq = draw(SEQS)
        return wire.ack(seq), (T.ACK, seq)
    if which in ("ping", "pong"):
        kind = T.PING if which == "ping" else T.PONG
        return wire.frame(kind), (kind,)
    kind, body = draw(st.sampled_from(list(T))), draw(BODIES)
    return wire.frame(kind, body), ("raw", kind, body)


def _parse(kind: T, body: bytes, expected: tuple) -> tuple:
    if expected[0] == "raw":
        return ("raw", kind, body)
    if kind in CONTROL_CLS:
        return (kind, wire.decode_control(body, CONTROL_CLS[kind]))
    if kind == T.SEND:
        name, payload = wire.parse_send(body)
        return (kind, name, bytes(payload))
    if kind == T.DELIVER:
        seq, name, payload = wire.parse_deliver(body)
        return (kind, seq, name, bytes(payload))
    if kind == T.ACK:
        return (kind, wire.parse_ack(body))
    assert body == b""
    return (kind,)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


def _decode_all(pieces: list[bytes]) -> list[tuple[T, bytes]]:
    dec = FrameDecoder()
    out: list[tuple[T, bytes]] = []
    for piece in pieces:
        out.extend(dec.feed(piece))
    assert dec._buf == bytearray(), "bytes left over after complete frames"
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(frames(), min_size=1, max_size=8), st.lists(st.integers(0, 10_000), max_size=12))
def test_frames_round_trip_in_random_splits(
    items: list[tuple[bytes, tuple]], cuts: list[int]
) -> None:
    stream = b"".join(data for data, _ in items)
    decoded = _decode_all(_split(stream, cuts))
    assert len(decoded) == len(items)
    for (kind, body), (_, expected) in zip(decoded, items, strict=True):
        assert _parse(kind, body, expected) == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(frames(), min_size=1, max_size=4))
def test_frames_round_trip_byte_by_byte(items: list[tuple[bytes, tuple]]) -> None:
    stream = b"".join(data for data, _ in items)
    dec = FrameDecoder()
    decoded: list[tuple[T, bytes]] = []
    ends = set()
    pos = 0
    for data, _ in items:
        pos += len(data)
        ends.add(pos)
    for i in range(len(stream)):
        got = dec.feed(stream[i : i + 1])
        # a frame completes exactly on its last byte, never earlier or later
        assert len(got) == (1 if i + 1 in ends else 0)
        decoded.extend(got)
    for (kind, body), (_, expected) in zip(decoded, items, strict=True):
        assert _parse(kind, body, expected) == expected


def test_read_frame_from_stream_reader() -> None:
    async def main() -> list[tuple[T, bytes]]:
        reader = asyncio.StreamReader()
        reader.feed_data(wire.ack(7) + wire.frame(T.PING))
        reader.feed_eof()
        out = [await wire.read_frame(reader, 1024), await wire.read_frame(reader, 1024)]
        with pytest.raises(asyncio.IncompleteReadError):
            await wire.read_frame(reader, 1024)
        return out

    assert asyncio.run(main()) == [(T.ACK, struct.pack(">Q", 7)), (T.PING, b"")]


# --------------------------------------------------------------------------- bad input


def _head(length: int, kind: int) -> bytes:
    return struct.pack(">IB", length, kind)


def test_oversized_length_field_raises() -> None:
    dec = FrameDecoder(max_frame=1000)
    with pytest.raises(WireError, match="exceeds"):
        dec.feed(_head(1000 + 1024 + 1, T.SEND))
    with pytest.raises(WireError, match="exceeds"):
        FrameDecoder().feed(b"\xff\xff\xff\xff\x05")
    # the length is checked as soon as the 5-byte head is there, before any body
    with pytest.raises(WireError):
        FrameDecoder(max_frame=10).feed(_head(1 << 30, T.SEND)[:3] + _head(1 << 30, T.SEND)[3:])


def test_largest_allowed_frame_is_accepted() -> None:
    dec = FrameDecoder(max_frame=100)
    body = b"x" * 100
    assert dec.feed(wire.frame(T.SEND, body)) == [(T.SEND, body)]


def test_zero_length_raises() -> None:
    with pytest.raises(WireError, match="length 0"):
        FrameDecoder().feed(_head(0, T.PING))


@pytest.mark.parametrize("kind", [0, max(T) + 1, 99, 255])
def test_unknown_type_raises(kind: int) -> None:
    with pytest.raises(WireError, match="unknown frame type"):
        FrameDecoder().feed(_head(1, kind))
    with pytest.raises(WireError):
        wire.parse_head(_head(1, kind), 1000)


def test_read_frame_rejects_oversized() -> None:
    async def main() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(_head(50_000, T.SEND))
        with pytest.raises(WireError):
            await wire.read_frame(reader, 1000)

    asyncio.run(main())


@pytest.mark.parametrize(
    "body",
    [
        b"",  # empty
        b"\x00rest",  # zero-length name
        b"\x05ab",  # name longer than the body
        b"\x02\xff\xfe",  # not UTF-8
    ],
)
def test_truncated_or_bad_send_raises(body: bytes) -> None:
    with pytest.raises(WireError):
        wire.parse_send(body)


def test_send_with_empty_payload_is_valid() -> None:
    name, payload = wire.parse_send(b"\x01b")
    assert (name, bytes(payload)) == ("b", b"")


@pytest.mark.parametrize("cut", range(0, 9 + 3))
def test_truncated_deliver_raises(cut: int) -> None:
    full = wire.deliver_head(42, "bob", 0)[wire.HEAD_SIZE :]  # 8 seq + 1 len + 3 name
    assert len(full) == 12
    with pytest.raises(WireError):
        wire.parse_deliver(full[:cut])
    assert wire.parse_deliver(full)[:2] == (42, "bob")


@pytest.mark.parametrize("size", [0, 1, 7, 9, 16])
def test_bad_ack_length_raises(size: int) -> None:
    with pytest.raises(WireError, match="ACK"):
        wire.parse_ack(b"\x00" * size)


def test_decode_control_rejects_wrong_types() -> None:
    hello = wire.Hello(1, "room", "a", {"a": b"k" * 32, "b": b"j" * 32}, b"sig")
    body = wire.control(T.HELLO, hello)[wire.HEAD_SIZE :]
    assert wire.decode_control(body, wire.Hello) == hello
    with pytest.raises(WireError, match="Welcome"):
        wire.decode_control(body, wire.Welcome)
    with pytest.raises(WireError, match="Error"):
        wire.decode_control(b'{"code": 5, "message": "x"}', wire.Error)
    with pytest.raises(WireError):
        wire.decode_control(b'{"code": "x"}', wire.Error)  # missing field
    with pytest.raises(WireError):
        wire.decode_control(b"not json", wire.Presence)
    with pytest.raises(WireError):
        wire.decode_control(b'{"party": "a", "event": "x"', wire.Presence)  # truncated
    with pytest.raises(WireError):
        wire.decode_control(b"[1, 2]", wire.Challenge)
    with pytest.raises(WireError):  # bytes fields travel as base64
        wire.decode_control(
            b'{"version": 1, "nonce": "!!!", "epoch": "e", "max_frame": 3}', wire.Challenge
        )


def test_auth_message_binds_every_field_and_ignores_roster_order() -> None:
    roster = {"a": b"\x01" * 32, "b": b"\x02" * 32, "c": b"\x03" * 32}
    reordered = dict(reversed(list(roster.items())))
    base = wire.auth_message(b"n" * 32, "room", "a", roster)
    assert wire.auth_message(b"n" * 32, "room", "a", reordered) == base
    variants = [
        wire.auth_message(b"m" * 32, "room", "a", roster),
        wire.auth_message(b"n" * 32, "room2", "a", roster),
        wire.auth_message(b"n" * 32, "room", "b", roster),
        wire.auth_message(b"n" * 32, "room", "a", {**roster, "c": b"\x04" * 32}),
        wire.auth_message(b"n" * 32, "room", "a", {"a": roster["a"], "b": roster["b"]}),
    ]
    assert all(v != base for v in variants)
