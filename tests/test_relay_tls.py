"""TLS to the relay: a pinned self-signed certificate, the invitation's relay URL, and the
refusals a party must see (a wrong pin, TLS to a plain relay, an unpinned self-signed
certificate)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_relay_inprocess import (
    HOST,
    close_all,
    eventually,
    exchange,
    flood,
    join,
    relay,
    run,
)

from fedlab_kit.cli import main
from fedlab_kit.demo.harness import RelayProcess, create_room
from fedlab_kit.errors import InputError, InvitationError, RelayRejected
from fedlab_kit.net.identity import Identity, Invitation
from fedlab_kit.net.relay.tls import make_self_signed, pin_of_file

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    out = tmp_path_factory.mktemp("tls")
    pin = make_self_signed(HOST, out / "relay.crt", out / "relay.key")
    assert (out / "relay.key").stat().st_mode & 0o077 == 0  # the key is the owner's only
    return out / "relay.crt", out / "relay.key", pin


def _room(port: int, *, pin: str = "", tls: bool = True) -> tuple[Invitation, dict]:
    ids = {p: Identity.generate(p) for p in ("a", "b")}
    inv = Invitation.create(HOST, port, "r", [i.card for i in ids.values()], tls=tls, pin=pin)
    return inv, ids


def test_parties_meet_over_tls_with_the_pinned_certificate(cert: tuple[Path, Path, str]
                                                           ) -> None:
    crt, key, pin = cert

    async def main_() -> None:
        async with relay(tls_cert=crt, tls_key=key) as srv:
            assert srv.pin == pin == pin_of_file(crt)
            inv, ids = _room(srv.port, pin=pin)
            inv = Invitation.from_string(inv.to_string())  # what the parties paste
            assert inv.url == f"tls://{HOST}:{srv.port}" and inv.pin == pin
            a, b = await join(ids["a"], inv), await join(ids["b"], inv)
            try:
                await exchange(a, b, b"over tls")
            finally:
                await close_all(a, b)

    run(main_())


def test_a_wrong_pin_is_refused_before_anything_is_sent(cert: tuple[Path, Path, str]) -> None:
    """The attack: a relay (or someone in between) with another certificate. The party
    refuses it after the TLS handshake, before its HELLO (its signed credential) leaves."""
    crt, key, pin = cert
    wrong = "sha256:" + "0" * 64

    async def main_() -> None:
        async with relay(tls_cert=crt, tls_key=key) as srv:
            inv, ids = _room(srv.port, pin=wrong)
            with pytest.raises(RelayRejected, match="is not the one in the invitation") as info:
                await join(ids["a"], inv)
            assert pin in str(info.value) and wrong in str(info.value)
            assert not srv.rooms  # no HELLO reached the relay

    run(main_())


def test_tls_to_a_plain_relay_and_unpinned_self_signed_are_clear_errors(
        cert: tuple[Path, Path, str]) -> None:
    crt, key, _pin = cert

    async def main_() -> None:
        async with relay() as plain:
            inv, ids = _room(plain.port)
            with pytest.raises(RelayRejected, match=r"TLS with the relay at tls://.* failed"):
                await asyncio.wait_for(join(ids["a"], inv), 20)
        async with relay(tls_cert=crt, tls_key=key) as srv:
            inv, ids = _room(srv.port)  # no pin: the system's CAs must vouch for it
            with pytest.raises(RelayRejected, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
                await asyncio.wait_for(join(ids["a"], inv), 20)

    run(main_())


def test_invitations_name_the_relay_as_a_url() -> None:
    cards = [Identity.generate(n).card for n in ("a", "b")]
    pin = "sha256:" + "ab" * 32
    inv = Invitation.create("relay.example.org", 443, "r", cards, pin=pin)
    text = inv.to_string()
    assert text.startswith("fedlab-invite2|tls://relay.example.org:443|sha256:")
    assert Invitation.from_string(text) == inv
    plain = Invitation.create("::1", 8765, "r", cards)
    assert plain.url == "tcp://[::1]:8765" and Invitation.from_string(plain.to_string()) == plain
    assert plain.to_string().startswith("fedlab-invite1|::1|8765|")  # what older kits read
    old = f"fedlab-invite1|10.0.0.5|8765|r|{','.join(c.to_string() for c in cards)}"
    assert Invitation.from_string(old).url == "tcp://10.0.0.5:8765"  # the first format
    with pytest.raises(InvitationError, match="'sha256:' and 64 hex"):
        Invitation.create("h", 1, "r", cards, pin="sha256:xyz")
    with pytest.raises(InvitationError, match="needs a TLS relay"):
        Invitation("h", 1, "r", tuple(cards), tls=False, pin=pin)
    with pytest.raises(InvitationError, match="tcp://HOST:PORT or tls://HOST:PORT"):
        Invitation.from_string(text.replace("tls://", "http://"))
    behind = Invitation.to_relay("wss://relay.example.org/fedlab", "r", cards, pin=pin)
    assert (behind.port, behind.path, behind.tls, behind.websocket) == (443, "/fedlab", True,
                                                                        True)
    assert behind.url == "wss://relay.example.org:443/fedlab"
    assert Invitation.from_string(behind.to_string()) == behind
    assert Invitation.to_relay("relay:9000", "r", cards).url == "tcp://relay:9000"
    with pytest.raises(InvitationError, match="HOST:PORT"):
        Invitation.to_relay("tcp://relay:9000/path", "r", cards)
    with pytest.raises(InputError, match="both a certificate and its key"):
        run(relay(tls_cert=Path("x.crt")).__aenter__())


def test_cli_tls_cert_invite_and_ping_report_transport_and_pin(tmp_path: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(main, ["tls-cert", "--host", HOST, "--out", str(tmp_path)])
    assert made.exit_code == 0, made.output
    pin = json.loads(made.output)["pin"]
    with RelayProcess.start(extra=["--tls-cert", str(tmp_path / "relay.crt"),
                                   "--tls-key", str(tmp_path / "relay.key")]) as relay_proc:
        _inv, keys = create_room(["a", "b"], tmp_path / "keys", HOST, relay_proc.port)
        cards = [str(Identity.load(keys[n]).card.to_string()) for n in ("a", "b")]
        out = runner.invoke(main, ["invite", "--relay", f"tls://{HOST}:{relay_proc.port}",
                                   "--tls-cert", str(tmp_path / "relay.crt"), "--room", "r",
                                   *cards])
        assert out.exit_code == 0, out.output
        invitation = out.output.strip()
        assert Invitation.from_string(invitation).pin == pin
        ping = runner.invoke(main, ["ping", "--key", str(keys["a"]),
                                    "--invitation", invitation])
        assert ping.exit_code == 0, ping.output
        said = json.loads(ping.output)
        assert (said["transport"], said["pin"]) == ("tls", pin)
        assert said["relay"] == f"tls://{HOST}:{relay_proc.port}"


# ------------------------------------------------------------------ WebSocket transport


async def _connect_proxy(seen: list[str]) -> asyncio.Server:
    """A minimal HTTP CONNECT proxy (what a corporate proxy does for HTTPS)."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = (await reader.readline()).decode()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        method, target, _version = request.split()
        seen.append(f"{method} {target}")
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            writer.close()
            return
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return await asyncio.start_server(handle, HOST, 0)


def test_parties_meet_over_ws_and_over_wss_through_an_http_proxy(
        cert: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """ws:// directly; then wss:// with the pinned certificate through an HTTP CONNECT
    proxy named by $HTTPS_PROXY, as a party behind a corporate proxy connects (the proxy
    sees only the tunnel's address); a wrong pin is refused through the proxy too."""
    crt, key, pin = cert
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "HTTPS_PROXY",
                 "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)

    async def main_() -> None:
        async with relay(ws_port=0) as srv:
            ids = {p: Identity.generate(p) for p in ("a", "b")}
            inv = Invitation.create(HOST, srv.ws_port, "r", [i.card for i in ids.values()],
                                    websocket=True, path="/fedlab")
            inv = Invitation.from_string(inv.to_string())
            assert inv.url == f"ws://{HOST}:{srv.ws_port}/fedlab"
            a, b = await join(ids["a"], inv), await join(ids["b"], inv)
            try:
                await exchange(a, b, b"over ws")
            finally:
                await close_all(a, b)
        seen: list[str] = []
        proxy = await _connect_proxy(seen)
        proxy_port = proxy.sockets[0].getsockname()[1]
        monkeypatch.setenv("HTTPS_PROXY", f"http://{HOST}:{proxy_port}")
        try:
            async with relay(ws_port=0, tls_cert=crt, tls_key=key) as srv:
                ids = {p: Identity.generate(p) for p in ("a", "b")}
                cards = [i.card for i in ids.values()]
                inv = Invitation.to_relay(f"wss://{HOST}:{srv.ws_port}/fedlab", "r", cards,
                                          pin=pin)
                a, b = await join(ids["a"], inv), await join(ids["b"], inv)
                try:
                    await exchange(a, b, b"through the proxy")
                finally:
                    await close_all(a, b)
                assert seen.count(f"CONNECT {HOST}:{srv.ws_port}") == 2, seen
                wrong = Invitation.to_relay(f"wss://{HOST}:{srv.ws_port}/fedlab", "r", cards,
                                            pin="sha256:" + "1" * 64)
                with pytest.raises(RelayRejected, match="is not the one in the invitation"):
                    await join(ids["a"], wrong)
        finally:
            proxy.close()

    run(main_())


def test_the_websocket_reader_pulls_only_what_it_needs() -> None:
    """No unbounded buffering: a sender that floods the WebSocket is held back by the
    library's flow control, because the reader takes a message only when a read needs
    more bytes; a cancelled read loses nothing; a closed socket ends the stream."""
    from websockets.exceptions import ConnectionClosedOK
    from websockets.frames import Close

    from fedlab_kit.net.relay.ws import WsReader

    class Flood:
        def __init__(self) -> None:
            self.taken = 0
            self.gate = asyncio.Event()
            self.gate.set()

        async def recv(self) -> bytes:
            await self.gate.wait()
            self.taken += 1
            if self.taken > 6:
                raise ConnectionClosedOK(Close(1000, ""), Close(1000, ""), True)
            return bytes([self.taken]) * 4

    async def main_() -> None:
        flood = Flood()
        reader = WsReader(flood)
        assert await reader.readexactly(10) == b"\x01" * 4 + b"\x02" * 4 + b"\x03" * 2
        assert flood.taken == 3  # three messages for ten bytes, not the whole flood
        flood.gate.clear()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(reader.readexactly(8), 0.05)
        flood.gate.set()
        assert await reader.readexactly(8) == b"\x03" * 2 + b"\x04" * 4 + b"\x05" * 2
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await reader.readexactly(100)
        assert info.value.partial == b"\x05" * 2 + b"\x06" * 4

    run(main_())


def test_a_stalled_websocket_send_ends_in_an_error_not_a_hang() -> None:
    """A black-holed network while sending: close() gives the send 5 s, then drain()
    raises (as a broken TCP stream does), so the party's sender can reconnect."""
    from fedlab_kit.net.relay.ws import WsWriter

    class Stalled:
        async def send(self, _data: bytes) -> None:
            await asyncio.Event().wait()  # never returns

        async def close(self) -> None:
            return None

    async def main_() -> None:
        writer = WsWriter(Stalled(), {})
        writer.write(b"x" * 100)
        draining = asyncio.create_task(writer.drain())
        await asyncio.sleep(0.1)
        assert not draining.done()
        writer.close()
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(draining, 10)

    run(main_())


@pytest.mark.parametrize("transport", ["tls", "ws"])
def test_a_flood_of_unfinished_handshakes_fills_only_its_own_slots(
        cert: tuple[Path, Path, str], transport: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The attack: TCP connections that never send a TLS ClientHello (tls://) or an HTTP
    upgrade (ws://). They count from the moment they are accepted, so they take only their
    source address's handshake slots; a party from elsewhere joins at once, and one from
    the flooded address, turned away before TLS or the upgrade, retries until a slot frees."""
    crt, key, pin = cert
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    options = ({"tls_cert": crt, "tls_key": key} if transport == "tls" else {"ws_port": 0})

    async def main_() -> None:
        async with relay(max_pending_per_address=4, max_pending=8, hello_timeout=1.5,
                         **options) as srv:
            port = srv.port if transport == "tls" else srv.ws_port
            ids = {p: Identity.generate(p) for p in ("a", "b", "c")}
            inv = Invitation.create(HOST, port, "r", [i.card for i in ids.values()],
                                    **({"tls": True, "pin": pin} if transport == "tls" else
                                       {"websocket": True, "path": "/fedlab"}))
            held = await flood(port, "127.0.0.2", 40)
            await eventually(lambda: srv._pending.get("127.0.0.2") == 4, 5,
                             "the flood to fill its address's 4 slots")
            a, b = await join(ids["a"], inv), await join(ids["b"], inv)
            more = await flood(port, "127.0.0.1", 4)
            await eventually(lambda: srv._pending.get("127.0.0.1") == 4, 5, "a full address")
            c = await join(ids["c"], inv)  # busy (closed before TLS / the upgrade), then in
            try:
                await exchange(a, b, b"during the flood")
                await exchange(c, a, b"after busy")
                assert srv.stats.rejections["busy"] > 0
            finally:
                for w in held + more:
                    w.close()
                await close_all(a, b, c)

    run(main_())


def test_only_a_trusted_reverse_proxy_names_the_party_address() -> None:
    """Behind a reverse proxy every party arrives from the proxy's address and would share
    its handshake slots; the relay counts the X-Forwarded-For address instead, but only
    from a proxy it was told to trust (anyone else could claim any address)."""
    import ipaddress

    from websockets.asyncio.client import connect

    from fedlab_kit.net.relay.server import forwarded_for, source_of

    proxies = [ipaddress.ip_network("10.0.0.0/8")]
    assert forwarded_for("198.51.100.7", "10.1.2.3", proxies) == "198.51.100.7"
    assert forwarded_for("6.6.6.6, 198.51.100.7", "10.1.2.3", proxies) == "198.51.100.7"
    assert forwarded_for("198.51.100.7, 10.9.9.9", "10.1.2.3", proxies) == "198.51.100.7"
    assert forwarded_for("198.51.100.7", "203.0.113.1", proxies) == "203.0.113.1"
    assert forwarded_for(None, "10.1.2.3", proxies) == "10.1.2.3"
    assert source_of(("2001:db8:1:2:aaaa::1", 5, 0, 0)) == "2001:db8:1:2::/64"
    assert source_of(("::ffff:192.0.2.4", 5, 0, 0)) == "192.0.2.4"
    assert source_of(("192.0.2.4", 5)) == "192.0.2.4"

    async def pending_under(trusted: tuple[str, ...]) -> dict[str, int]:
        async with relay(ws_port=0, trusted_proxies=trusted) as srv:
            url = f"ws://{HOST}:{srv.ws_port}/fedlab"
            async with connect(url, additional_headers={"X-Forwarded-For": "203.0.113.9"},
                               proxy=None):
                await eventually(lambda: bool(srv._pending), 5, "the handshake to count")
                return dict(srv._pending)

    assert run(pending_under(("127.0.0.1",))) == {"203.0.113.9": 1}
    assert run(pending_under(())) == {HOST: 1}


def test_a_wrong_pin_over_wss_is_refused_before_the_upgrade_request(
        cert: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The attack: someone in between answers wss:// with another certificate and reads
    what the party sends. The pin is checked as soon as TLS is up, so not even the HTTP
    upgrade request (host, path, user agent) reaches it."""
    from fedlab_kit.net.relay.tls import server_context

    crt, key, _pin = cert
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)

    async def main_() -> bytes:
        got = bytearray()

        async def listen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while chunk := await reader.read(1 << 16):
                    got.extend(chunk)
            except (ConnectionError, OSError):
                pass
            writer.close()

        server = await asyncio.start_server(listen, HOST, 0, ssl=server_context(crt, key))
        port = server.sockets[0].getsockname()[1]
        ids = {p: Identity.generate(p) for p in ("a", "b")}
        inv = Invitation.to_relay(f"wss://{HOST}:{port}/fedlab", "r",
                                  [i.card for i in ids.values()], pin="sha256:" + "1" * 64)
        try:
            with pytest.raises(RelayRejected, match="is not the one in the invitation"):
                await join(ids["a"], inv)
            await asyncio.sleep(0.5)
        finally:
            server.close()
        return bytes(got)

    assert run(main_()) == b"", "the upgrade request went to a relay with the wrong pin"
