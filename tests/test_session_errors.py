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


def test_a_peer_that_left_before_a_protocol_starts_is_reported(tmp_path) -> None:
    """drive() watches presence from its start; a watched peer already gone is PeerLost at
    once, not a wait for a timeout."""
    from waiting import wait_for

    from fedlab_kit import RollCall, run
    from fedlab_kit.demo.harness import RelayProcess, create_room
    from fedlab_kit.errors import PeerLost

    with RelayProcess.start() as relay:
        inv, keys = create_room(["a", "b"], tmp_path, relay.host, relay.port)
        a = Party(Identity.load(keys["a"]), inv)
        b = Party(Identity.load(keys["b"]), inv)
        b.close()
        wait_for(lambda: a.presence.get("b") == "left", 60, "b to have left")
        with pytest.raises(PeerLost, match="b"):
            run(a, RollCall("a", ["b"], {}), timeout=600, watch=["b"])
        a.close()
