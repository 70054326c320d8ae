"""Tests of end-to-end sealing between two parties (AES-GCM per direction)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlab_kit.errors import ProtocolError, SecurityError
from fedlab_kit.net.frames import FrameHeader, FrameType, decode_header, encode_header
from fedlab_kit.net.identity import Identity
from fedlab_kit.net.sealing import NONCE, OVERHEAD, TAG, PeerSealer

ROOM = "room-1"
A = Identity.generate("a")
B = Identity.generate("b")
C = Identity.generate("c")
A_TO_B = PeerSealer(A, B.card, ROOM)  # a's sealer for peer b
B_FROM_A = PeerSealer(B, A.card, ROOM)  # b's sealer for peer a


def header(**kw: object) -> FrameHeader:
    base = dict(
        type=FrameType.DATA, sender="a", recipient="b", instance=b"i" * 8,
        peer_instance=b"j" * 8, epoch=3, msg=5, chunk=1, n_chunks=4, total=100,
        session="sess", kind="kind",
    )
    base.update(kw)
    return FrameHeader(**base)  # type: ignore[arg-type]


def test_header_codec_round_trip() -> None:
    h = header(cursor_msg=7, cursor_chunk=2, reply=True, type=FrameType.RESUME)
    assert decode_header(encode_header(h)) == h
    with pytest.raises(ProtocolError, match="malformed"):
        decode_header(b"\x93\x01\x02")
    with pytest.raises(ProtocolError):
        decode_header(encode_header(h)[:-1])


@pytest.mark.parametrize("data", [b"", b"x", b"payload " * 1000, bytes(range(256))])
def test_seal_open_round_trip(data: bytes) -> None:
    h = header()
    body = A_TO_B.seal(h, data)
    got_h, got_data = B_FROM_A.open(body)
    assert got_h == h
    assert bytes(got_data) == data
    assert len(body) - len(data) <= OVERHEAD
    assert len(data) < 8 or data not in body  # the payload is not visible on the wire


def test_both_directions_and_memoryview_input() -> None:
    b_to_a, a_from_b = B_FROM_A, A_TO_B
    body = b_to_a.seal(header(sender="b", recipient="a"), memoryview(b"reply"))
    h, data = a_from_b.open(memoryview(body))
    assert (h.sender, bytes(data)) == ("b", b"reply")


def test_fresh_nonce_every_seal() -> None:
    h = header()
    one, two = A_TO_B.seal(h, b"same"), A_TO_B.seal(h, b"same")
    assert one != two and one[:NONCE] != two[:NONCE]
    assert B_FROM_A.open(one)[0] == B_FROM_A.open(two)[0]


def test_wrong_direction_fails_naming_the_peer() -> None:
    body = A_TO_B.seal(header(), b"data")
    # a reflected frame: a's own frame handed back to a, which expects frames from b
    with pytest.raises(SecurityError, match="authentication failed") as info:
        A_TO_B.open(body)
    assert info.value.peer == "b"
    assert "'b'" in str(info.value)


def test_wrong_room_fails() -> None:
    body = A_TO_B.seal(header(), b"data")
    other_room = PeerSealer(B, A.card, "room-2")
    with pytest.raises(SecurityError) as info:
        other_room.open(body)
    assert info.value.peer == "a"


def test_third_party_cannot_open_or_forge() -> None:
    body = A_TO_B.seal(header(), b"data")
    c_from_a = PeerSealer(C, A.card, ROOM)
    with pytest.raises(SecurityError):
        c_from_a.open(body)
    # c sealing for b while claiming to be a: b's sealer for a rejects it
    c_as_a = PeerSealer(C, B.card, ROOM)
    with pytest.raises(SecurityError):
        B_FROM_A.open(c_as_a.seal(header(), b"forged"))


def test_impostor_with_same_name_fails() -> None:
    fake_a = Identity.generate("a")
    body = PeerSealer(fake_a, B.card, ROOM).seal(header(), b"data")
    with pytest.raises(SecurityError):
        B_FROM_A.open(body)


BODY = A_TO_B.seal(header(), b"some payload bytes")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(BODY) * 8 - 1))
def test_any_flipped_bit_fails(bit: int) -> None:
    tampered = bytearray(BODY)
    tampered[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(SecurityError) as info:
        B_FROM_A.open(bytes(tampered))
    assert info.value.peer == "a"


@pytest.mark.parametrize("cut", [0, 1, NONCE, NONCE + TAG, NONCE + TAG + 3, -1, -TAG])
def test_truncated_body_fails(cut: int) -> None:
    with pytest.raises(SecurityError) as info:
        B_FROM_A.open(BODY[:cut])
    assert info.value.peer == "a"


@settings(max_examples=100, deadline=None)
@given(st.integers(0, len(BODY) - 1))
def test_every_truncation_fails(cut: int) -> None:
    with pytest.raises(SecurityError):
        B_FROM_A.open(BODY[:cut])


def test_appended_bytes_fail() -> None:
    with pytest.raises(SecurityError):
        B_FROM_A.open(BODY + b"\x00")
