"""Tests of identities, party cards, invitations and key files."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from fedlab_kit.errors import InvitationError
from fedlab_kit.net.identity import (
    CARD_PREFIX,
    INVITE_PREFIX,
    INVITE_PREFIX2,
    Identity,
    Invitation,
    PartyCard,
    _b64,
    check_name,
)


@pytest.fixture(scope="module")
def ids() -> dict[str, Identity]:
    return {n: Identity.generate(n) for n in ("alice", "bob", "carol")}


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --------------------------------------------------------------------------- cards


def test_card_round_trip(ids: dict[str, Identity]) -> None:
    card = ids["alice"].card
    text = card.to_string()
    assert text.startswith(f"{CARD_PREFIX}:alice:")
    assert PartyCard.from_string(text) == card
    assert PartyCard.from_string(f"  {text}\n") == card  # pasted with whitespace
    assert len(card.sign_key) == 32 and len(card.box_key) == 32
    assert card != ids["bob"].card


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "fedlab-card1:alice:AAAA",  # too few parts
        "fedlab-card2:alice:AAAA:AAAA",  # wrong prefix
        "fedlab-card1:alice:AAAA:AAAA:AAAA",  # too many parts
        "fedlab-card1:alice:AAAA:AAAA",  # keys too short
        "fedlab-card1:alice:A:A",  # not base64
        "fedlab-card1:bad name:" + "A" * 43 + ":" + "A" * 43,  # invalid name
        "fedlab-card1::" + "A" * 43 + ":" + "A" * 43,  # empty name
    ],
)
def test_malformed_card_raises_readable_error(text: str) -> None:
    with pytest.raises(InvitationError) as info:
        PartyCard.from_string(text)
    msg = str(info.value)
    assert msg and "Traceback" not in msg
    assert any(w in msg for w in ("card", "name", "base64", "keys"))


def test_card_error_names_expected_format() -> None:
    with pytest.raises(InvitationError, match=CARD_PREFIX):
        PartyCard.from_string("something else")


def test_card_with_wrong_key_length_raises() -> None:
    with pytest.raises(InvitationError, match="32 bytes"):
        PartyCard("alice", b"x" * 31, b"y" * 32)
    long_key = _b64(b"z" * 33)
    with pytest.raises(InvitationError, match="32 bytes"):
        PartyCard.from_string(f"{CARD_PREFIX}:alice:{long_key}:{long_key}")


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["a", "A1", "bank-2", "x.y_z", "9lives", "a" * 63])
def test_valid_names(name: str) -> None:
    assert check_name(name) == name
    assert Identity.generate(name).name == name


@pytest.mark.parametrize(
    "name", ["", "-a", ".a", "_a", "a b", "a:b", "a|b", "a,b", "a/b", "é", "a" * 64, "a\n"]
)
def test_invalid_names_raise(name: str) -> None:
    with pytest.raises(InvitationError, match="invalid party name"):
        check_name(name)
    with pytest.raises(InvitationError):
        Identity.generate(name)


def test_invalid_name_types_raise() -> None:
    with pytest.raises(InvitationError):
        check_name(None)  # type: ignore[arg-type]
    with pytest.raises(InvitationError):
        check_name(7)  # type: ignore[arg-type]


def test_invalid_room_name_raises(ids: dict[str, Identity]) -> None:
    cards = [ids["alice"].card, ids["bob"].card]
    with pytest.raises(InvitationError, match="room name"):
        Invitation("h", 1, "bad room", tuple(cards))


# --------------------------------------------------------------------------- invitations


def test_invitation_round_trip(ids: dict[str, Identity]) -> None:
    cards = [i.card for i in ids.values()]
    inv = Invitation.create("relay.example.org", 8765, "room-1", cards)
    text = inv.to_string()
    assert text.startswith(INVITE_PREFIX + "|relay.example.org|8765|")  # older kits read it
    back = Invitation.from_string(text)
    assert back == inv
    assert back.names == ["alice", "bob", "carol"]
    assert back.card("bob") == ids["bob"].card
    assert back.roster() == {n: i.card.sign_key for n, i in ids.items()}
    assert Invitation.from_string(text + "\n") == inv


def test_invitation_random_room(ids: dict[str, Identity]) -> None:
    cards = [ids["alice"].card, ids["bob"].card]
    one = Invitation.create("h", 1, None, cards)
    two = Invitation.create("h", 1, None, cards)
    assert one.room.startswith("room-") and one.room != two.room
    assert check_name(one.room, "room name") == one.room


def test_invitation_card_of_non_member_raises(ids: dict[str, Identity]) -> None:
    inv = Invitation.create("h", 1, "r", [ids["alice"].card, ids["bob"].card])
    with pytest.raises(InvitationError, match="not a member") as info:
        inv.card("carol")
    assert "alice" in str(info.value) and "bob" in str(info.value)


def _valid_invite(ids: dict[str, Identity]) -> str:
    return Invitation.create("h", 9, "r", [ids["alice"].card, ids["bob"].card]).to_string()


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: "",
        lambda s: "not an invitation",
        lambda s: s.replace(INVITE_PREFIX, "fedlab-invite9"),
        lambda s: s.replace("|9|", "|nine|"),  # port not a number
        lambda s: s.replace(f"{INVITE_PREFIX}|h|9|", f"{INVITE_PREFIX2}|http://h:9||"),
        lambda s: s.replace(f"{INVITE_PREFIX}|h|9|", f"{INVITE_PREFIX2}|tcp://h:9|sha256:00|"),
        lambda s: s + "|extra",
        lambda s: "|".join(s.split("|")[:4]),  # no cards
        lambda s: s.replace(CARD_PREFIX, "xcard", 1),  # a broken card
        lambda s: s[: s.rindex(",")],  # a single member
        lambda s: s.replace("|r|", "|bad room|"),
        lambda s: s[:-5],  # a truncated key
    ],
)
def test_malformed_invitation_raises_readable_error(ids: dict[str, Identity], mangle) -> None:
    text = mangle(_valid_invite(ids))
    with pytest.raises(InvitationError) as info:
        Invitation.from_string(text)
    assert str(info.value)


def test_port_error_names_the_port(ids: dict[str, Identity]) -> None:
    text = _valid_invite(ids).replace("|9|", "|nine|")
    with pytest.raises(InvitationError, match="'nine'"):
        Invitation.from_string(text)
    cards = ",".join(ids[n].card.to_string() for n in ("alice", "bob"))
    with pytest.raises(InvitationError, match="nine"):  # the URL format too
        Invitation.from_string(f"{INVITE_PREFIX2}|tls://h:nine||r|{cards}")


def test_duplicate_member_names_raise(ids: dict[str, Identity]) -> None:
    other_alice = Identity.generate("alice")
    with pytest.raises(InvitationError, match="twice"):
        Invitation.create("h", 1, "r", [ids["alice"].card, ids["bob"].card, other_alice.card])
    with pytest.raises(InvitationError, match="twice"):
        Invitation.create("h", 1, "r", [ids["alice"].card, ids["alice"].card])
    # also when parsing someone else's string
    good = Invitation.create("h", 1, "r", [ids["alice"].card, ids["bob"].card]).to_string()
    with pytest.raises(InvitationError, match="twice"):
        Invitation.from_string(good + "," + other_alice.card.to_string())


def test_member_count_limits(ids: dict[str, Identity]) -> None:
    with pytest.raises(InvitationError, match="2 to 16"):
        Invitation.create("h", 1, "r", [ids["alice"].card])
    many = [Identity.generate(f"p{i}").card for i in range(17)]
    with pytest.raises(InvitationError, match="2 to 16"):
        Invitation.create("h", 1, "r", many)
    assert len(Invitation.create("h", 1, "r", many[:16]).members) == 16


# --------------------------------------------------------------------------- key agreement


def test_agree_is_symmetric_and_pairwise_distinct(ids: dict[str, Identity]) -> None:
    a, b, c = ids["alice"], ids["bob"], ids["carol"]
    ab = a.agree(b.card)
    assert ab == b.agree(a.card)
    assert len(ab) == 32
    assert a.agree(c.card) == c.agree(a.card)
    assert len({ab, a.agree(c.card), b.agree(c.card)}) == 3


def test_signature_verifies_with_card(ids: dict[str, Identity]) -> None:
    from cryptography.exceptions import InvalidSignature

    sig = ids["alice"].sign(b"message")
    ids["alice"].card.verify_key().verify(sig, b"message")
    with pytest.raises(InvalidSignature):
        ids["bob"].card.verify_key().verify(sig, b"message")


# --------------------------------------------------------------------------- key files


def test_save_load_round_trip(tmp_path: Path, ids: dict[str, Identity]) -> None:
    alice = ids["alice"]
    path = alice.save(tmp_path / "sub" / "alice.key")
    assert path == tmp_path / "sub" / "alice.key"
    assert _mode(path) == 0o600
    loaded = Identity.load(path)
    assert loaded.name == "alice"
    assert loaded.card == alice.card
    assert loaded.agree(ids["bob"].card) == alice.agree(ids["bob"].card)
    assert json.loads(path.read_text())["format"] == "fedlab-identity1"


def test_save_over_existing_world_readable_file_is_owner_only(
    tmp_path: Path, ids: dict[str, Identity]
) -> None:
    path = tmp_path / "alice.key"
    path.write_text("old")
    path.chmod(0o644)
    ids["alice"].save(path)
    assert _mode(path) == 0o600, f"private key file left with mode {oct(_mode(path))}"
    assert Identity.load(path).card == ids["alice"].card


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvitationError, match="does not exist"):
        Identity.load(tmp_path / "nope.key")


@pytest.mark.parametrize(
    "content",
    [
        "",
        "not json",
        "{",
        '{"format": "other"}',
        '{"format": "fedlab-identity1"}',
        '{"format": "fedlab-identity1", "name": "a", "sign": "AAAA", "box": "AAAA"}',
        '{"format": "fedlab-identity1", "name": "a", "sign": 5, "box": 6}',
        b"\xff\xfe\x00binary",
    ],
)
def test_load_corrupt_file_raises_invitation_error(tmp_path: Path, content: str | bytes) -> None:
    path = tmp_path / "bad.key"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(InvitationError) as info:
        Identity.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", ["[1, 2]", '"a string"', "null", "42"])
def test_load_json_that_is_not_an_object_raises_invitation_error(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "bad.key"
    path.write_text(content)
    with pytest.raises(InvitationError) as info:
        Identity.load(path)
    assert str(path) in str(info.value)


def test_load_file_with_invalid_name(tmp_path: Path, ids: dict[str, Identity]) -> None:
    path = ids["alice"].save(tmp_path / "a.key")
    doc = json.loads(path.read_text())
    doc["name"] = "bad name"
    path.write_text(json.dumps(doc))
    with pytest.raises(InvitationError, match="invalid party name"):
        Identity.load(path)
