"""Clear errors when a party cannot start."""

from __future__ import annotations

import socket

import pytest

from fedlab_kit import Identity, Invitation, InvitationError, Party, RelayUnavailable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_relay_names_the_address() -> None:
    a, b = Identity.generate("a"), Identity.generate("b")
    port = _free_port()
    inv = Invitation.create("127.0.0.1", port, "r", [a.card, b.card])
    with pytest.raises(RelayUnavailable, match=f"127.0.0.1:{port}"):
        Party(a, inv)


def test_identity_not_in_invitation() -> None:
    a, b, c = (Identity.generate(n) for n in "abc")
    inv = Invitation.create("127.0.0.1", 1, "r", [a.card, b.card])
    with pytest.raises(InvitationError, match="'c' is not a member"):
        Party(c, inv)


def test_invitation_from_file_or_text(tmp_path) -> None:
    a, b = Identity.generate("a"), Identity.generate("b")
    inv = Invitation.create("127.0.0.1", 9, "r", [a.card, b.card])
    (tmp_path / "inv.txt").write_text(inv.to_string() + "\n")
    assert Invitation.parse(f"@{tmp_path / 'inv.txt'}") == inv
    assert Invitation.parse(inv.to_string()) == inv
    with pytest.raises(InvitationError, match="cannot read the invitation file"):
        Invitation.parse(f"@{tmp_path / 'missing.txt'}")
