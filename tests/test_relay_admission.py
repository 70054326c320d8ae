"""Who may open a room on a relay others can reach, how long rooms live, one memory cap
over all mailboxes, and what the relay reports (/healthz, /metrics). Written as the attacks
they rule out: squatting a room name, a forged or copied grant, an expired one, and one
room's backlog taking all the relay's memory."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_relay_inprocess import HOST, close_all, eventually, join, raw_open, relay, run

from fedlab_kit.errors import InputError, InvitationError, RelayRejected
from fedlab_kit.net.identity import Identity, Invitation
from fedlab_kit.net.relay import wire
from fedlab_kit.net.relay.client import RelayConnection
from fedlab_kit.net.relay.grants import RoomGrant, load_organisers
from fedlab_kit.net.relay.server import RelayConfig, RelayServer
from fedlab_kit.net.relay.wire import T

pytestmark = pytest.mark.timeout(90)


def _organisers(tmp_path: Path, *organisers: Identity) -> Path:
    path = tmp_path / "organisers.txt"
    path.write_text("# who may open rooms here\n" + "".join(f"{o.card.to_string()}  # {o.name}\n"
                                                           for o in organisers))
    return path


async def _hello(port: int, identity: Identity, room: str, roster: dict[str, bytes],
                 grant: str = "") -> wire.Error | wire.Welcome:
    """A handshake by hand with any roster and grant; the relay's answer."""
    reader, writer, challenge = await raw_open(port)
    signature = identity.sign(wire.auth_message(challenge.nonce, room, identity.name, roster))
    writer.write(wire.control(T.HELLO, wire.Hello(wire.PROTOCOL_VERSION, room, identity.name,
                                                  roster, signature, os.urandom(8),
                                                  grant=grant)))
    kind, body = await asyncio.wait_for(wire.read_frame(reader, 1 << 20), 5)
    writer.close()
    return wire.decode_control(body, wire.Welcome if kind == T.WELCOME else wire.Error)


def test_a_relay_others_can_reach_does_not_open_rooms_for_anyone() -> None:
    with pytest.raises(InputError, match=r"--rooms FILE.*--organisers FILE.*--open-rooms"):
        RelayServer(RelayConfig(host="0.0.0.0", port=0))
    assert RelayServer(RelayConfig(host="0.0.0.0", port=0, open_rooms=True)).open_rooms
    assert RelayServer(RelayConfig(host="127.0.0.1", port=0)).open_rooms  # loopback: open
    assert RelayServer(RelayConfig(host="::1", port=0)).open_rooms


def test_squatting_a_room_name_fails_and_the_real_parties_get_in(tmp_path: Path) -> None:
    """The attacker knows the room name and the relay, and has seen the invitation (with
    its grant): it can open neither that room with its own roster nor any other room."""
    organiser = Identity.generate("organiser")
    members = {n: Identity.generate(n) for n in ("retailer", "media")}

    async def main() -> None:
        async with relay(organisers=_organisers(tmp_path, organiser)) as server:
            assert not server.open_rooms
            real = Invitation.create(HOST, server.port, "q3-campaign",
                                     [m.card for m in members.values()]).granted_by(organiser)
            mallory = Identity.generate("retailer")  # takes a member's name, not its key
            own = {"retailer": mallory.card.sign_key, "x": Identity.generate("x").card.sign_key}
            # no grant
            err = await _hello(server.port, mallory, "q3-campaign", own)
            assert err.code == "unknown-room" and "signed by an organiser" in err.message
            # a grant it signed itself
            forged = RoomGrant.sign(mallory, "q3-campaign", own).to_string()
            err = await _hello(server.port, mallory, "q3-campaign", own, forged)
            assert err.code == "bad-grant" and "does not trust" in err.message
            # the real grant, copied from the invitation, over its own roster
            err = await _hello(server.port, mallory, "q3-campaign", own, real.grant)
            assert err.code == "bad-grant" and "does not match" in err.message
            # ... or for another room name
            err = await _hello(server.port, mallory, "other-room", own, real.grant)
            assert err.code == "bad-grant"
            # the real roster with the copied grant: the signature proves the key it lacks
            err = await _hello(server.port, mallory, "q3-campaign", real.roster(), real.grant)
            assert err.code == "bad-credential"
            assert server.rooms == {}, "a refused join opened a room"
            assert server.stats.rejections["bad-grant"] == 3
            # the members, with the organiser's invitation, get in and talk
            a, b = [await join(members[n], real) for n in ("retailer", "media")]
            await a.send("media", b"ok", kind="hello")
            assert (await b.recv(kind="hello", timeout=5)).payload == b"ok"
            assert server.rooms["q3-campaign"].expires == RoomGrant.from_string(
                real.grant).expires
            await close_all(a, b)

    run(main())


def test_expired_grants_open_nothing_and_close_their_room(tmp_path: Path) -> None:
    organiser = Identity.generate("organiser")
    members = {n: Identity.generate(n) for n in ("a", "b")}

    async def main() -> None:
        async with relay(organisers=_organisers(tmp_path, organiser)) as server:
            inv = Invitation.create(HOST, server.port, "r1", [m.card for m in members.values()])
            roster = inv.roster()
            old = RoomGrant.sign(organiser, "r1", roster, days=1, now=time.time() - 2 * 86400)
            err = await _hello(server.port, members["a"], "r1", roster, old.to_string())
            assert err.code == "bad-grant" and "expired" in err.message
            # a grant that runs out while the room is open: nobody new gets in, and the
            # room closes once it is empty
            short = RoomGrant.sign(organiser, "r1", roster, days=1)
            welcome = await _hello(server.port, members["a"], "r1", roster, short.to_string())
            assert isinstance(welcome, wire.Welcome)
            server.rooms["r1"].expires = int(time.time()) - 1
            err = await _hello(server.port, members["b"], "r1", roster, short.to_string())
            assert err.code == "room-expired"
            await eventually(lambda: not server.rooms["r1"].present(), what="a to leave")
            assert server.sweep() == ["r1"] and "r1" not in server.rooms

    run(main())


def test_idle_rooms_close_and_reopen_afresh() -> None:
    """A room nobody joined for room_idle_seconds is closed and its waiting bytes freed; a
    member that comes back opens it anew, with a new epoch (so it does not take the old
    room's frame numbers for its own)."""
    async def main() -> None:
        async with relay(room_idle_seconds=3600) as server:
            ids = {n: Identity.generate(n) for n in ("a", "b")}
            inv = Invitation.create(HOST, server.port, "idle", [i.card for i in ids.values()])
            a = _conn(ids["a"], inv, [])
            await a.start()
            await a.send("b", b"x" * 50_000)  # b never came: the frame waits for it
            await eventually(lambda: server.budget.used == 50_000, what="the frame to wait")
            first_epoch = server.rooms["idle"].epoch
            await a.close()
            await eventually(lambda: not server.rooms["idle"].present(), what="a to leave")
            assert server.sweep() == []  # not idle long enough
            assert server.sweep(time.time()) == []
            server.rooms["idle"].idle_since -= 3601
            assert server.sweep() == ["idle"]
            assert server.rooms == {} and server.budget.used == 0
            assert server.stats.rooms_closed == 1
            a = _conn(ids["a"], inv, [])
            await a.start()
            assert server.rooms["idle"].epoch != first_epoch and a.epoch != first_epoch
            await a.close()

    run(main())


def test_rooms_from_the_rooms_file_are_emptied_not_forgotten(tmp_path: Path) -> None:
    ids = {n: Identity.generate(n) for n in ("a", "b")}
    rooms = tmp_path / "rooms.txt"
    rooms.write_text(Invitation.create(HOST, 1, "kept", [i.card for i in ids.values()])
                     .to_string() + "\n")

    async def main() -> None:
        async with relay(rooms_file=rooms, room_idle_seconds=10) as server:
            server.rooms["kept"].idle_since -= 11
            assert server.sweep() == ["kept"]
            assert set(server.rooms) == {"kept"} and server.rooms["kept"].kept

    run(main())


def test_one_memory_cap_over_all_mailboxes() -> None:
    """Senders in many rooms whose recipients are away cannot make the relay hold more than
    its memory cap (plus one frame per empty mailbox); each is told why it is held back,
    and everything arrives once the recipients read. Nothing is lost or duplicated."""
    cap = 1 << 20
    frame = 200_000

    async def main() -> None:
        async with relay(memory_bytes=cap, mailbox_bytes=64 << 20) as server:
            senders, invitations, notices = [], [], []
            handler = _Capture(notices)
            logging.getLogger("fedlab.client").addHandler(handler)
            try:
                for r in range(4):
                    ids = {n: Identity.generate(n) for n in ("s", "r")}
                    inv = Invitation.create(HOST, server.port, f"m{r}",
                                            [i.card for i in ids.values()])
                    conn = _conn(ids["s"], inv, [])
                    await conn.start()
                    senders.append((conn, ids, inv))
                    invitations.append(inv)
                sends = [asyncio.create_task(_send_all(conn, 10, frame))
                         for conn, _, _ in senders]
                await eventually(lambda: server.stats.rejections["relay-full"] > 0, 10,
                                 "the cap to hold a sender back")
                await asyncio.sleep(0.5)
                assert server.budget.used <= cap + 4 * frame, server.budget.used
                assert any("relay-full" in n for n in notices), notices
                # the recipients come and read: every frame arrives once, in order
                got: list[list[bytes]] = []
                readers = []
                for _, ids, inv in senders:
                    inbox: list[bytes] = []
                    got.append(inbox)
                    reader = _conn(ids["r"], inv, inbox)
                    await reader.start()
                    readers.append(reader)
                await asyncio.wait_for(asyncio.gather(*sends), 30)
                await eventually(lambda: all(len(g) == 10 for g in got), 30, "every frame")
                for inbox in got:
                    assert [m[:4] for m in inbox] == [i.to_bytes(4, "big") for i in range(10)]
                await eventually(lambda: server.budget.used == 0, 10, "mailboxes to empty")
                for conn in [c for c, _, _ in senders] + readers:
                    await conn.close()
            finally:
                logging.getLogger("fedlab.client").removeHandler(handler)

    run(main(), 80)


class _Capture(logging.Handler):
    def __init__(self, out: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        self.out.append(record.getMessage())


def _conn(identity: Identity, inv: Invitation, inbox: list[bytes]) -> RelayConnection:
    def ignore(*_: object) -> None:
        return None

    return RelayConnection(identity, inv, os.urandom(8),
                           on_deliver=lambda _sender, body: inbox.append(bytes(body)),
                           on_connected=ignore, on_presence=ignore, on_fatal=ignore)


async def _send_all(conn: RelayConnection, count: int, size: int) -> None:
    for i in range(count):
        await conn.send("r", i.to_bytes(4, "big") + bytes(size - 4))


def _get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_healthz_and_metrics_report_traffic_but_no_names() -> None:
    async def main() -> None:
        async with relay(metrics_port=0) as server:
            port = server.metrics_port
            assert port
            status, kind, text = await asyncio.to_thread(_get, port, "/healthz")
            health = json.loads(text)
            assert status == 200 and kind == "application/json"
            assert health["status"] == "ok" and health["rooms"] == 0
            ids = {n: Identity.generate(n) for n in ("secret-retailer", "secret-media")}
            inv = Invitation.create(HOST, server.port, "secret-room",
                                    [i.card for i in ids.values()])
            a, b = [await join(i, inv) for i in ids.values()]
            await a.send("secret-media", b"y" * 10_000)
            await b.recv(timeout=5)
            impostor = Identity.generate("secret-media")
            with pytest.raises(RelayRejected):
                await _conn(impostor, inv, []).start()
            status, kind, text = await asyncio.to_thread(_get, port, "/metrics")
            assert status == 200 and kind.startswith("text/plain; version=0.0.4")
            values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                      for line in text.splitlines() if line and not line.startswith("#")}
            assert values["fedlab_relay_rooms"] == 1
            assert values["fedlab_relay_members_present"] == 2
            assert values["fedlab_relay_bytes_in_total"] >= 10_000
            assert values["fedlab_relay_bytes_out_total"] >= 10_000
            assert values['fedlab_relay_rejections_total{reason="bad-credential"}'] == 1
            assert values["fedlab_relay_mailbox_cap_bytes"] == server.budget.cap
            assert "secret" not in text and HOST not in text
            assert (await asyncio.to_thread(_get, port, "/other"))[0] == 404
            await close_all(a, b)

    run(main())


def test_grant_strings_and_organiser_files(tmp_path: Path) -> None:
    organiser = Identity.generate("org")
    cards = [Identity.generate(n).card for n in ("a", "b")]
    inv = Invitation.create("relay.example", 443, "r", cards, websocket=True, tls=True)
    signed = inv.granted_by(organiser, days=2)
    again = Invitation.from_string(signed.to_string())
    assert again == signed and again.grant and not inv.grant
    grant = RoomGrant.from_string(again.grant)
    assert 1.9 * 86400 < grant.expires - time.time() < 2.1 * 86400
    grant.check("r", inv.roster(), {organiser.card.sign_key})
    plain = Invitation.create("127.0.0.1", 8765, "r", cards).granted_by(organiser)
    assert plain.to_string().startswith("fedlab-invite2|tcp://127.0.0.1:8765|")
    assert Invitation.from_string(plain.to_string()) == plain
    with pytest.raises(InvitationError, match="not a room grant"):
        Invitation("h", 1, "r", tuple(cards), grant="nonsense")
    with pytest.raises(InvitationError, match="0-366 days"):
        inv.granted_by(organiser, days=400)
    bad = tmp_path / "bad.txt"
    bad.write_text("# nothing\n\n")
    with pytest.raises(InvitationError, match="lists no party card"):
        load_organisers(bad)
    bad.write_text("fedlab-card1:x\n")
    with pytest.raises(InvitationError, match="line 1"):
        load_organisers(bad)
    with pytest.raises(InvitationError, match="cannot read"):
        load_organisers(tmp_path / "missing.txt")


def _fedlab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedlab_kit.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_cli_signed_invitation_opens_a_room_on_a_relay_with_organisers(tmp_path: Path) -> None:
    """From the command line, as an operator and an organiser would: keys, a signed
    invitation, a relay with --organisers and JSON logs, and fedlab ping through it."""
    cards = {}
    for name in ("org", "a", "b"):
        made = _fedlab("keygen", name, cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        cards[name] = made.stdout.strip()
    refused = _fedlab("relay", "--host", "0.0.0.0", "--port", "0", cwd=tmp_path)
    assert refused.returncode != 0 and "--organisers" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    (tmp_path / "organisers.txt").write_text(f"{cards['org']}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedlab_kit.cli", "--log-level", "INFO", "relay", "--host",
         "127.0.0.2", "--port", "0", "--organisers", "organisers.txt", "--metrics-port", "0",
         "--log-format", "json"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert "listening on 127.0.0.2:" in line, line + proc.stderr.read()  # type: ignore
        port = line.rsplit(":", 1)[1].strip()
        members = (cards["a"], cards["b"])
        unsigned = _fedlab("invite", "--relay", f"tcp://127.0.0.2:{port}", "--room", "r",
                           *members, cwd=tmp_path).stdout.strip()
        ping = _fedlab("ping", "--key", "a.key", "--invitation", unsigned, cwd=tmp_path)
        assert ping.returncode != 0 and "organiser" in ping.stderr, ping.stderr
        signed = _fedlab("invite", "--relay", f"tcp://127.0.0.2:{port}", "--room", "r",
                         "--sign-with", "org.key", "--days", "1", *members, cwd=tmp_path)
        assert signed.returncode == 0, signed.stderr
        ping = _fedlab("ping", "--key", "a.key", "--invitation", signed.stdout.strip(),
                       cwd=tmp_path)
        assert ping.returncode == 0, ping.stderr
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any("room r opened" in r["message"] for r in records), records
