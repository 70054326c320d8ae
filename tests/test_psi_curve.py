"""Tests of the Curve25519 layer of ECDH-PSI: hashing IDs to points, batched X25519."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_scalarmult

from fedlab_kit.errors import ProtocolError
from fedlab_kit.psi import curve
from fedlab_kit.psi.curve import POINT, InvalidPoint, hash_and_mul, hash_id, mul_points

SCALARS = st.binary(min_size=32, max_size=32)
KEYS = st.binary(min_size=1, max_size=40)
ZERO = bytes(32)
ONE = b"\x01" + bytes(31)  # u = 1 has order 4: also maps to the identity


def _points(n: int, tag: bytes = b"t") -> bytes:
    return b"".join(hash_id(tag, b"k%d" % i) for i in range(n))


@settings(max_examples=25, deadline=None)
@given(a=SCALARS, b=SCALARS, key=KEYS, tag=st.binary(max_size=16))
def test_scalar_multiplication_commutes(a: bytes, b: bytes, key: bytes, tag: bytes) -> None:
    p = hash_id(tag, key)
    ab = mul_points(a, mul_points(b, p))
    ba = mul_points(b, mul_points(a, p))
    assert ab == ba
    assert len(ab) == POINT
    assert ab != p


@settings(max_examples=10, deadline=None)
@given(a=SCALARS, b=SCALARS, n=st.integers(1, 9))
def test_commutativity_holds_point_by_point_on_batches(a: bytes, b: bytes, n: int) -> None:
    batch = _points(n)
    ab = mul_points(a, mul_points(b, batch))
    assert ab == mul_points(b, mul_points(a, batch))
    assert len(ab) == n * POINT
    # each point is multiplied on its own: same as the single-point libsodium call
    singles = [crypto_scalarmult(a, batch[i : i + POINT]) for i in range(0, len(batch), POINT)]
    assert mul_points(a, batch) == b"".join(singles)


@pytest.mark.parametrize("length", [1, 31, 33, 63, 65, 100])
def test_batch_length_must_be_a_multiple_of_32(length: int) -> None:
    with pytest.raises(ValueError, match=f"{length} bytes"):
        mul_points(os.urandom(32), os.urandom(length))


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_scalar_must_be_32_bytes(length: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        mul_points(os.urandom(length), _points(2))


def test_empty_batch_gives_empty_result() -> None:
    s = os.urandom(32)
    assert mul_points(s, b"") == b""
    assert hash_and_mul(s, b"t", []) == b""


@pytest.mark.parametrize("bad", [ZERO, ONE], ids=["zero", "one"])
@pytest.mark.parametrize("at", [0, 3, 6])
def test_low_order_point_raises_invalid_point_with_its_index(bad: bytes, at: int) -> None:
    pts = bytearray(_points(7))
    pts[at * POINT : (at + 1) * POINT] = bad
    with pytest.raises(InvalidPoint) as info:
        mul_points(os.urandom(32), bytes(pts))
    assert info.value.index == at
    assert f"point {at}" in str(info.value)
    assert isinstance(info.value, ProtocolError)  # only a peer sends such a point


def test_cffi_and_binding_paths_agree() -> None:
    s = os.urandom(32)
    pts = _points(5)
    assert curve._mul_points_binding(s, pts) == mul_points(s, pts)
    if curve._lib is not None:
        assert curve._mul_points_cffi(s, pts) == curve._mul_points_binding(s, pts)
    bad = pts[: 2 * POINT] + ZERO + pts[3 * POINT :]
    with pytest.raises(InvalidPoint) as info:
        curve._mul_points_binding(s, bad)
    assert info.value.index == 2


@settings(max_examples=10, deadline=None)
@given(s=SCALARS, tag=st.binary(max_size=16), keys=st.lists(KEYS, max_size=8))
def test_hash_and_mul_equals_mul_points_of_hashes(s: bytes, tag: bytes, keys: list[bytes]) -> None:
    expected = mul_points(s, b"".join(hash_id(tag, k) for k in keys))
    assert hash_and_mul(s, tag, keys) == expected
    assert len(expected) == POINT * len(keys)


def test_hash_id_is_deterministic_and_32_bytes() -> None:
    assert hash_id(b"t", b"s:x") == hash_id(b"t", b"s:x")
    assert len(hash_id(b"t", b"s:x")) == POINT
    assert hash_id(b"t", b"s:x") != hash_id(b"t", b"s:y")
    assert hash_id(b"t", b"i:42") != hash_id(b"t", b"s:42")


@settings(max_examples=30, deadline=None)
@given(t1=st.binary(max_size=20), t2=st.binary(max_size=20), key=KEYS)
def test_different_tags_give_different_points(t1: bytes, t2: bytes, key: bytes) -> None:
    if t1 == t2:
        assert hash_id(t1, key) == hash_id(t2, key)
    else:
        assert hash_id(t1, key) != hash_id(t2, key)


def test_tag_separates_sessions_after_multiplication() -> None:
    s = os.urandom(32)
    keys = [b"s:alice", b"s:bob"]
    one, two = hash_and_mul(s, b"session-1", keys), hash_and_mul(s, b"session-2", keys)
    assert one[:POINT] != two[:POINT] and one[POINT:] != two[POINT:]
    # pinned construction: every party (and every version of the kit) must hash alike
    assert hash_id(b"t", b"k") == curve.elligator2(hashlib.sha512(b"fedlab-psi2|t|k").digest())
    # and the map pinned on two values computed by hand: r = 0 maps to u = -A / 1 when
    # g(-A) = -A is a square mod p, else to u = 0
    p, a = 2**255 - 19, 486662
    want = (-a) % p if pow((-a) % p, (p - 1) // 2, p) == 1 else 0
    assert curve.elligator2(bytes(64)) == want.to_bytes(32, "little")


def test_new_scalar_is_fresh_32_bytes() -> None:
    a, b = curve.new_scalar(), curve.new_scalar()
    assert len(a) == len(b) == 32
    assert a != b


def test_twist_bit_of_the_hash_does_not_survive_two_hops() -> None:
    """The attack: a peer that guesses an ID computes whether the ID's raw hash lies on the
    curve or on its twist and compares with the element it relays after two scalar
    multiplications. With raw SHA-256 bytes as u-coordinates (the control) the bit survives
    for every element; hashed onto the curve, every element is on the curve and the
    guess agrees by chance only."""
    from fedlab_kit.psi.curve import TAG_PREFIX, on_curve

    a, b = curve.new_scalar(), curve.new_scalar()
    keys = [b"s:id-%d" % i for i in range(2000)]
    raw = [hashlib.sha256(TAG_PREFIX + b"t|" + k).digest() for k in keys]
    two_hops = mul_points(a, mul_points(b, b"".join(raw)))
    control = sum(on_curve(r) == on_curve(two_hops[i * POINT:(i + 1) * POINT])
                  for i, r in enumerate(raw))
    assert control == len(keys)  # the leak the old hashing had
    ours = mul_points(a, hash_and_mul(b, b"t", keys))
    outs = [ours[i * POINT:(i + 1) * POINT] for i in range(len(keys))]
    assert all(on_curve(o) for o in outs)
    agree = sum(on_curve(r) == on_curve(o) for r, o in zip(raw, outs, strict=True))
    assert 0.45 * len(keys) <= agree <= 0.55 * len(keys)
    assert all(on_curve(hash_id(b"t", k)) for k in keys[:200])


# RFC 9380, appendix J.7.2 (curve25519_XMD:SHA-512_ELL2_NU_): u = hash_to_field(msg) and
# Q = map_to_curve(u), for msg "", "abc" and "abcdef0123456789" (big-endian hex)
RFC9380_MAP = [
    ("608d892b641f0328523802a6603427c26e55e6f27e71a91a478148d45b5093cd",
     "51125222da5e763d97f3c10fcc92ea6860b9ccbbd2eb1285728f566721c1e65b"),
    ("46f5b22494bfeaa7f232cc8d054be68561af50230234d7d1d63d1d9abeca8da5",
     "7d56d1e08cb0ccb92baf069c18c49bb5a0dcd927eff8dcf75ca921ef7f3e6eeb"),
    ("235fe40c443766ce7e18111c33862d66c3b33267efa50d50f9e8e5d252a40aaa",
     "3fbe66b9c9883d79e8407150e7c2a1c8680bee496c62fabe4619a72b3cabe90f"),
]


@pytest.mark.parametrize(("u", "qx"), RFC9380_MAP)
def test_elligator2_matches_rfc9380_map_to_curve(u: str, qx: str) -> None:
    out = curve.elligator2(int(u, 16).to_bytes(32, "little"))
    assert int.from_bytes(out, "little") == int(qx, 16)
    assert curve.on_curve(out)
