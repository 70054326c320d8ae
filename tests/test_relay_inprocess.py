"""In-process tests of the relay with real sockets: parties, rejections, bad input, backpressure.

Each test runs its own event loop with ``asyncio.run`` (no pytest-asyncio).
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fedlab_kit.errors import InvitationError, RelayRejected
from fedlab_kit.net.identity import Identity, Invitation
from fedlab_kit.net.relay import wire
from fedlab_kit.net.relay.client import ClientConfig, RelayConnection
from fedlab_kit.net.relay.server import RelayConfig, RelayServer
from fedlab_kit.net.relay.wire import T
from fedlab_kit.net.sealing import OVERHEAD
from fedlab_kit.net.session import AsyncParty, PartyOptions

pytestmark = pytest.mark.timeout(60)
R = TypeVar("R")
HOST = "127.0.0.1"


def run(coro: Awaitable[R], limit: float = 45) -> R:
    async def main() -> R:
        return await asyncio.wait_for(coro, limit)

    return asyncio.run(main())


@asynccontextmanager
async def relay(**config: Any) -> AsyncIterator[RelayServer]:
    server = RelayServer(RelayConfig(host=HOST, port=0, **config))
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def room(server: RelayServer, name: str, *parties: str) -> tuple[Invitation, dict[str, Identity]]:
    ids = {p: Identity.generate(p) for p in parties}
    return Invitation.create(HOST, server.port, name, [i.card for i in ids.values()]), ids


async def join(
    identity: Identity, inv: Invitation, options: PartyOptions | None = None
) -> AsyncParty:
    party = await AsyncParty(identity, inv, options).connect()
    # connect() returns before the links exist (see test_send_right_after_connect); wait
    # until the connection has announced itself so the other tests test something else
    await asyncio.wait_for(party._conn.connected.wait(), 5)  # type: ignore[union-attr]
    return party


async def close_all(*parties: AsyncParty) -> None:
    """Close parties without letting a hanging close() stall the test (a bug tested by
    test_close_after_the_peer_left_returns_promptly, not by every test)."""
    for p in parties:
        task = asyncio.create_task(p.close(flush_timeout=1))
        done, _ = await asyncio.wait({task}, timeout=4)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=4)


async def eventually(cond: Callable[[], bool], timeout: float = 5, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.01)


# ------------------------------------------------------------------ raw wire clients


async def raw_open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, wire.Challenge]:
    reader, writer = await asyncio.open_connection(HOST, port)
    kind, body = await asyncio.wait_for(wire.read_frame(reader, 1 << 16), 5)
    assert kind == T.CHALLENGE
    return reader, writer, wire.decode_control(body, wire.Challenge)


async def raw_join(
    port: int, identity: Identity, inv: Invitation, *, sign_with: Identity | None = None,
    signature: bytes | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, T, bytes]:
    """Handshake by hand; returns the relay's answer (WELCOME or ERROR)."""
    reader, writer, challenge = await raw_open(port)
    roster = inv.roster()
    msg = wire.auth_message(challenge.nonce, inv.room, identity.name, roster)
    if signature is None:
        signature = (sign_with or identity).sign(msg)
    hello = wire.Hello(wire.PROTOCOL_VERSION, inv.room, identity.name, roster, signature,
                       os.urandom(8))
    writer.write(wire.control(T.HELLO, hello))
    kind, body = await asyncio.wait_for(wire.read_frame(reader, 1 << 20), 5)
    return reader, writer, kind, body


async def expect_error_then_eof(reader: asyncio.StreamReader, code: str) -> wire.Error:
    kind, body = await asyncio.wait_for(wire.read_frame(reader, 1 << 20), 5)
    assert kind == T.ERROR, kind
    err = wire.decode_control(body, wire.Error)
    assert err.code == code, err
    assert err.fatal
    assert await asyncio.wait_for(reader.read(), 5) == b"", "relay kept the connection open"
    return err


async def exchange(a: AsyncParty, b: AsyncParty, tag: bytes) -> None:
    """One message each way, checked."""
    await a.send(b.name, b"ping " + tag, kind="check")
    await b.send(a.name, b"pong " + tag, kind="check")
    got_b = await b.recv(kind="check", timeout=5)
    got_a = await a.recv(kind="check", timeout=5)
    assert (got_b.sender, bytes(got_b.payload)) == (a.name, b"ping " + tag)
    assert (got_a.sender, bytes(got_a.payload)) == (b.name, b"pong " + tag)


# ------------------------------------------------------------------ messaging


def test_messages_both_ways() -> None:
    async def main() -> None:
        async with relay() as server:
            inv, ids = room(server, "r1", "a", "b")
            opts = PartyOptions(chunk_size=1000)
            a, b = await join(ids["a"], inv, opts), await join(ids["b"], inv, opts)
            to_b = [os.urandom(n) for n in (0, 1, 999, 1000, 1001, 25_000)]
            to_a = [os.urandom(n) for n in (5, 3000, 0)]
            for i, p in enumerate(to_b):
                assert await a.send("b", p, kind="k", session=f"s{i}") == i
            for p in to_a:
                await b.send("a", p, kind="k")
            got_b = [await b.recv(timeout=5) for _ in to_b]
            got_a = [await a.recv(timeout=5) for _ in to_a]
            assert [bytes(e.payload) for e in got_b] == to_b
            assert [e.seq for e in got_b] == list(range(len(to_b)))
            assert [e.session for e in got_b] == [f"s{i}" for i in range(len(to_b))]
            assert {(e.sender, e.recipient, e.kind) for e in got_b} == {("a", "b", "k")}
            assert [bytes(e.payload) for e in got_a] == to_a
            await a.flush(5)
            await b.flush(5)
            assert a.bytes_sent > sum(map(len, to_b)) and b.bytes_received > sum(map(len, to_b))
            with pytest.raises(TimeoutError):
                await b.recv(timeout=0.2)  # nothing more, nothing duplicated
            await close_all(a, b)

    run(main())


def test_three_parties() -> None:
    async def main() -> None:
        async with relay() as server:
            inv, ids = room(server, "r3", "a", "b", "c")
            parties = {n: await join(i, inv) for n, i in ids.items()}
            for name, p in parties.items():
                assert sorted(p.peers) == sorted(set(ids) - {name})
                for peer in p.peers:
                    await p.send(peer, f"{name}->{peer}".encode(), kind="direct")
            await parties["a"].broadcast(b"to all from a", kind="bcast")
            for name, p in parties.items():
                for peer in p.peers:
                    env = await p.recv(sender=peer, kind="direct", timeout=5)
                    assert bytes(env.payload) == f"{peer}->{name}".encode()
            for name in ("b", "c"):
                env = await parties[name].recv(kind="bcast", timeout=5)
                assert (env.sender, bytes(env.payload)) == ("a", b"to all from a")
            assert server.rooms["r3"].present() == ["a", "b", "c"]
            await close_all(*parties.values())

    run(main())


def test_send_right_after_connect() -> None:
    """``await party.connect()`` then ``await party.send(...)`` straight away must work."""

    async def main() -> None:
        async with relay() as server:
            inv, ids = room(server, "r1", "a", "b")
            a = await AsyncParty(ids["a"], inv).connect()
            b = await AsyncParty(ids["b"], inv).connect()
            try:
                await b.send("a", b"hello")  # no await in between: links may not exist yet
                env = await a.recv(timeout=5)
                assert bytes(env.payload) == b"hello"
            finally:
                await close_all(a, b)

    run(main())


def test_close_after_the_peer_left_returns_promptly() -> None:
    """Both parties leave at the end of a protocol: the second close() must return."""

    async def main() -> None:
        async with relay() as server:
            inv, ids = room(server, "rq", "a", "b")
            a, b = await join(ids["a"], inv), await join(ids["b"], inv)
            await exchange(a, b, b"bye")
            await a.close(flush_timeout=1)
            closing = asyncio.create_task(b.close(flush_timeout=1))
            done, _ = await asyncio.wait({closing}, timeout=5)
            hung = not done
            if hung:  # unstick it (cancelling the caller happens to wake it up)
                closing.cancel()
                await asyncio.wait({closing}, timeout=5)
            assert not hung, "b.close() did not return within 5 s after a left"
            assert server.rooms["rq"].present() == []

    run(main())


# ------------------------------------------------------------------ presence


def test_presence_events_reach_callbacks() -> None:
    async def main() -> None:
        async with relay() as server:
            inv, ids = room(server, "rp", "a", "b", "c")
            a = await join(ids["a"], inv)
            assert a.presence == {"b": "absent", "c": "absent"}
            events: list[tuple[str, str]] = []
            a.on_presence(lambda party, event: events.append((party, event)))
            a.on_presence(lambda party, event: 1 / 0)  # a broken callback changes nothing
            b = await join(ids["b"], inv)
            await eventually(lambda: ("b", "joined") in events, what="b joined")
            assert a.presence["b"] == "present"
            assert b.presence == {"a": "present", "c": "absent"}
            await exchange(a, b, b"hello")
            await b.close(flush_timeout=1)
            await eventually(lambda: len(events) >= 2, what="b's departure")
            assert events == [("b", "joined"), ("b", "left")]
            assert a.presence["b"] == "left"
            assert server.rooms["rp"].present() == ["a"]
            await close_all(a)

    run(main())


def test_closing_while_frames_are_in_flight_is_reported_as_left() -> None:
    """A party that calls ``close()`` leaves: peers must see "left", not "lost"."""

    async def main() -> None:
        async with relay() as server:
            inv, ids = room(server, "rl", "a", "b")
            a, b = await join(ids["a"], inv), await join(ids["b"], inv)
            await exchange(a, b, b"hello")
            events: list[tuple[str, str]] = []
            a.on_presence(lambda party, event: events.append((party, event)))
            # frames are still on their way to b (b has not read them yet) ...
            b._conn._writer.transport.pause_reading()  # type: ignore[union-attr]
            await a.send("b", os.urandom(1 << 20))
            await eventually(lambda: server.rooms["rl"].mailboxes["b"].size > 0, what="sent")
            await asyncio.sleep(0.1)
            await b.close(flush_timeout=1)  # ... when b leaves on purpose
            await eventually(lambda: bool(events), what="b's departure")
            assert events == [("b", "left")], f"b closed the session, a was told {events}"
            await close_all(a)

    run(main())


# ------------------------------------------------------------------ rejections


def test_wrong_credential_is_refused() -> None:
    async def main() -> None:
        async with relay() as server:
            inv, ids = room(server, "rc", "a", "b")
            impostor = Identity.generate("a")  # same name, other keys
            with pytest.raises(InvitationError, match="pins other keys"):
                AsyncParty(impostor, inv)

            def ignore(*_: object) -> None:
                return None

            conn = RelayConnection(
                impostor, inv, os.urandom(8), on_deliver=ignore, on_connected=ignore,
                on_presence=ignore, on_fatal=ignore,
            )
            with pytest.raises(RelayRejected, match="credential") as info:
                await conn.start()
            assert info.value.code == "bad-credential"  # type: ignore[attr-defined]
            assert "rc" not in server.rooms  # a failed join opens no room
            # the genuine party still gets in
            a = await join(ids["a"], inv)
            assert server.rooms["rc"].present() == ["a"]
            await close_all(a)

    run(main())


def test_raw_hello_with_bad_signature_is_refused() -> None:
    async def main() -> None:
        async with relay() as server:
            inv, ids = room(server, "rs", "a", "b")
            for kwargs in (
                {"sign_with": Identity.generate("a")},
                {"signature": b"\x00" * 64},
                {"signature": b"short"},
            ):
                reader, writer, kind, body = await raw_join(server.port, ids["a"], inv, **kwargs)
                assert kind == T.ERROR
                assert wire.decode_control(body, wire.Error).code == "bad-credential"
                assert await asyncio.wait_for(reader.read(), 5) == b""
                writer.close()
            # a signature over another nonce (a replayed HELLO) is refused as well
            reader, writer, _ = await raw_open(server.port)
            stale = ids["a"].sign(wire.auth_message(b"x" * 32, "rs", "a", inv.roster()))
            hello = wire.Hello(1, "rs", "a", inv.roster(), stale, b"i")
            writer.write(wire.control(T.HELLO, hello))
            await expect_error_then_eof(reader, "bad-credential")
            writer.close()
            # a correct raw handshake is welcomed
            reader, writer, kind, body = await raw_join(server.port, ids["a"], inv)
            assert kind == T.WELCOME
            assert wire.decode_control(body, wire.Welcome).epoch == server.rooms["rs"].epoch
            writer.close()

    run(main())


def test_closed_mode_rejects_unknown_room(tmp_path: Path) -> None:
    async def main() -> None:
        known = {n: Identity.generate(n) for n in ("a", "b")}
        # the port in the file does not matter: the relay only uses room and cards
        line = Invitation.create(HOST, 1, "known", [i.card for i in known.values()]).to_string()
        rooms = tmp_path / "rooms.txt"
        rooms.write_text(f"# rooms of this relay\n\n{line}\n")
        async with relay(rooms_file=rooms) as server:
            assert not server.open_rooms and set(server.rooms) == {"known"}
            inv = Invitation.create(HOST, server.port, "known", [i.card for i in known.values()])
            a, b = await join(known["a"], inv), await join(known["b"], inv)
            await exchange(a, b, b"closed")

            other, other_ids = room(server, "elsewhere", "a", "b")
            with pytest.raises(RelayRejected) as info:
                await AsyncParty(other_ids["a"], other).connect()
            assert info.value.code == "unknown-room"  # type: ignore[attr-defined]
            assert "elsewhere" in str(info.value)
            assert set(server.rooms) == {"known"}

            # same room name, other members: refused too
            impostors = {n: Identity.generate(n) for n in ("a", "b")}
            fake = Invitation.create(HOST, server.port, "known",
                                     [i.card for i in impostors.values()])
            with pytest.raises(RelayRejected) as info:
                await AsyncParty(impostors["a"], fake).connect()
            assert info.value.code == "roster-mismatch"  # type: ignore[attr-defined]
            await exchange(a, b, b"still")
            await close_all(a, b)

    run(main())


def test_duplicate_name_from_another_process_is_refused() -> None:
    async def main() -> None:
        async with relay() as server:
            inv, ids = room(server, "rd", "a", "b")
            a, b = await join(ids["a"], inv), await join(ids["b"], inv)
            second_a = AsyncParty(ids["a"], inv)
            assert second_a.instance != a.instance
            with pytest.raises(RelayRejected) as info:
                await second_a.connect()
            assert info.value.code == "duplicate-name"  # type: ignore[attr-defined]
            assert "'a'" in str(info.value)
            await exchange(a, b, b"after duplicate")  # the first one is undisturbed
            assert a.reconnects == 0
            await close_all(a, b)

    run(main())


def test_not_a_member_and_bad_names_are_refused() -> None:
    async def main() -> None:
        async with relay() as server:
            inv, ids = room(server, "rm", "a", "b")
            a = await join(ids["a"], inv)
            stranger = Identity.generate("zed")
            _, writer, kind, body = await raw_join(server.port, stranger, inv)
            assert kind == T.ERROR
            assert wire.decode_control(body, wire.Error).code == "not-a-member"
            writer.close()
            reader, writer, _ = await raw_open(server.port)
            hello = wire.Hello(1, "bad room", "a", inv.roster(), b"s", b"i")
            writer.write(wire.control(T.HELLO, hello))
            await expect_error_then_eof(reader, "bad-name")
            writer.close()
            await close_all(a)

    run(main())


# ------------------------------------------------------------------ bad input


def _head(length: int, kind: int) -> bytes:
    return struct.pack(">IB", length, kind)


def test_garbage_and_oversized_frames_are_disconnected_others_unaffected() -> None:
    async def main() -> None:
        async with relay(max_frame=1 << 16) as server:
            inv, ids = room(server, "good", "a", "b")
            a, b = await join(ids["a"], inv), await join(ids["b"], inv)
            await exchange(a, b, b"before")

            # before the handshake
            for junk in (
                b"GARBAGE GARBAGE GARBAGE",  # a huge length field
                _head(100 << 20, T.HELLO),  # oversized HELLO
                _head(1, 0xEE),  # unknown type
                _head(0, T.HELLO),  # zero length
                wire.frame(T.HELLO, b"{not json"),  # undecodable HELLO
            ):
                reader, writer, _ = await raw_open(server.port)
                writer.write(junk)
                await expect_error_then_eof(reader, "bad-frame")
                writer.close()
            reader, writer, _ = await raw_open(server.port)
            writer.write(wire.frame(T.PING))  # a valid frame, but not a HELLO
            await expect_error_then_eof(reader, "protocol")
            writer.close()

            # after a successful join in another room
            binv, bids = room(server, "bad", "x", "y")
            for junk in (
                b"\x00\x00\x00\x05\xee????",  # unknown type
                _head((1 << 16) + 2048, T.SEND),  # over the relay's frame limit
                wire.frame(T.DELIVER, b"x" * 20),  # a type parties may not send
                wire.frame(T.SEND, b""),  # empty SEND
                wire.frame(T.ACK, b"123"),  # truncated ACK
            ):
                reader, writer, kind, _ = await raw_join(server.port, bids["x"], binv)
                assert kind == T.WELCOME
                writer.write(junk)
                await expect_error_then_eof(reader, "bad-frame")
                writer.close()
                await eventually(lambda: server.rooms["bad"].present() == [], what="x gone")

            await exchange(a, b, b"after")
            assert a.reconnects == 0 and b.reconnects == 0
            assert server.rooms["good"].present() == ["a", "b"]
            await close_all(a, b)

    run(main())


def test_send_to_unknown_recipient_is_a_non_fatal_error() -> None:
    async def main() -> None:
        async with relay() as server:
            inv, ids = room(server, "ru", "x", "y")
            reader, writer, kind, _ = await raw_join(server.port, ids["x"], inv)
            assert kind == T.WELCOME
            for recipient in ("zed", "x"):  # not a member; oneself
                writer.write(wire.send_head(recipient, 3) + b"abc")
                kind, body = await asyncio.wait_for(wire.read_frame(reader, 1 << 20), 5)
                assert kind == T.ERROR
                err = wire.decode_control(body, wire.Error)
                assert (err.code, err.fatal) == ("unknown-recipient", False)
                assert recipient in err.message
            # the connection is still usable
            writer.write(wire.frame(T.PING))
            kind, _ = await asyncio.wait_for(wire.read_frame(reader, 1 << 20), 5)
            assert kind == T.PONG
            writer.write(wire.send_head("y", 5) + b"hello")
            await eventually(lambda: server.rooms["ru"].mailboxes["y"].size == 5, what="queued")
            yreader, ywriter, kind, _ = await raw_join(server.port, ids["y"], inv)
            assert kind == T.WELCOME
            kind, body = await asyncio.wait_for(wire.read_frame(yreader, 1 << 20), 5)
            assert kind == T.DELIVER
            seq, sender, payload = wire.parse_deliver(body)
            assert (seq, sender, bytes(payload)) == (1, "x", b"hello")
            ywriter.write(wire.ack(seq))
            await eventually(lambda: server.rooms["ru"].mailboxes["y"].size == 0, what="acked")
            writer.close()
            ywriter.close()

    run(main())


# ------------------------------------------------------------------ backpressure


def test_mailbox_backpressure_bounds_relay_memory() -> None:
    limit, chunk = 64 << 10, 8 << 10

    async def main() -> None:
        async with relay(mailbox_bytes=limit) as server:
            inv, ids = room(server, "rb", "a", "b")
            opts = PartyOptions(chunk_size=chunk)
            a, b = await join(ids["a"], inv, opts), await join(ids["b"], inv, opts)
            await exchange(a, b, b"warm-up")
            payloads = [os.urandom(300_000), os.urandom(500_000)]
            mailbox = server.rooms["rb"].mailboxes["b"]
            transport = b._conn._writer.transport  # type: ignore[union-attr]
            transport.pause_reading()  # b stops reading: the relay cannot deliver
            for p in payloads:
                await a.send("b", p, kind="big")
            sizes = []
            for _ in range(150):
                sizes.append(mailbox.size)
                await asyncio.sleep(0.005)
            frame_bound = chunk + OVERHEAD
            # a's window is clamped below the relay's mailbox (announced in WELCOME), so
            # the mailbox fills up to about one window and never needs to block a
            assert max(sizes) > limit // 4, f"mailbox never filled: {max(sizes)}"
            assert max(sizes) <= limit + frame_bound, f"mailbox grew to {max(sizes)}"
            # the window stopped a: most of the data is still outside the relay
            assert (mailbox.next_seq - 1) * chunk < sum(map(len, payloads)) // 2
            with pytest.raises(TimeoutError):
                await b.recv(kind="big", timeout=0.05)
            transport.resume_reading()
            got = [await b.recv(kind="big", timeout=15) for _ in payloads]
            assert [bytes(e.payload) for e in got] == payloads
            await a.flush(10)
            assert max(sizes) <= limit + frame_bound
            await eventually(lambda: mailbox.size == 0, what="mailbox drained")
            await close_all(a, b)

    run(main())


def test_two_way_bulk_transfer_with_full_mailboxes_does_not_stall() -> None:
    """Both parties send more than a mailbox holds to each other at the same time.

    Each relay read loop blocks on the other party's full mailbox while that party's
    relay-level ACKs (which would free it) wait unread behind its blocked SEND frames.
    """
    limit = 64 << 10

    async def main() -> None:
        async with relay(mailbox_bytes=limit) as server:
            inv, ids = room(server, "rw", "a", "b")
            opts = PartyOptions(chunk_size=16 << 10)
            a, b = await join(ids["a"], inv, opts), await join(ids["b"], inv, opts)
            await exchange(a, b, b"warm-up")
            to_b, to_a = os.urandom(1 << 20), os.urandom(1 << 20)
            await a.send("b", to_b, kind="bulk")
            await b.send("a", to_a, kind="bulk")
            try:
                got_b = await b.recv(kind="bulk", timeout=6)
                got_a = await a.recv(kind="bulk", timeout=6)
            except TimeoutError:
                sizes = {n: m.size for n, m in server.rooms["rw"].mailboxes.items()}
                raise AssertionError(f"transfer stalled; relay mailbox sizes {sizes}") from None
            finally:
                await close_all(a, b)
            assert bytes(got_b.payload) == to_b and bytes(got_a.payload) == to_a

    run(main())


def test_silent_party_is_reported_lost_by_heartbeat() -> None:
    """A party that stops talking (no pings, no frames) is announced as "lost"."""

    async def main() -> None:
        async with relay(heartbeat_timeout=0.5) as server:
            inv, ids = room(server, "hb", "a", "b")
            a = await join(ids["a"], inv, PartyOptions(client=ClientConfig(heartbeat=0.1)))
            events: list[tuple[str, str]] = []
            a.on_presence(lambda peer, ev: events.append((peer, ev)))
            # b joins at the wire level and then says nothing at all
            reader, writer = await asyncio.open_connection(HOST, server.port)
            _, body = await wire.read_frame(reader, 1 << 16)
            challenge = wire.decode_control(body, wire.Challenge)
            roster = inv.roster()
            sig = ids["b"].sign(wire.auth_message(challenge.nonce, "hb", "b", roster))
            writer.write(wire.control(T.HELLO, wire.Hello(1, "hb", "b", roster, sig, b"x")))
            kind, _ = await wire.read_frame(reader, 1 << 16)
            assert kind == T.WELCOME
            await eventually(lambda: ("b", "joined") in events, what="b joined")
            await eventually(lambda: ("b", "lost") in events, timeout=5, what="b lost")
            assert server.rooms["hb"].present() == ["a"]
            writer.close()
            await close_all(a)

    run(main())


async def flood(port: int, source: str, n: int) -> list[asyncio.StreamWriter]:
    """``n`` idle TCP connections to ``port`` from the local address ``source``."""
    held = []
    for _ in range(n):
        _r, w = await asyncio.open_connection(HOST, port, local_addr=(source, 0))
        held.append(w)
    return held


def test_an_idle_socket_flood_does_not_keep_parties_out() -> None:
    """The attack: idle sockets that never say HELLO, renewed as fast as the relay drops
    them. They only fill the handshake slots of their own source address; a party from
    another address joins at once, members already in are untouched, and a party that
    does get ``busy`` retries with backoff instead of giving up ("not a fedlab relay")."""

    async def main() -> None:
        async with relay(max_pending_per_address=4, max_pending=8, hello_timeout=1.5) as srv:
            inv, ids = room(srv, "r", "a", "b", "c")
            a = await join(ids["a"], inv)
            held = await flood(srv.port, "127.0.0.2", 40)  # one attacker address
            await eventually(lambda: sum(srv._pending.values()) == 4, 5, "4 pending slots")
            started = time.monotonic()
            b = await join(ids["b"], inv)  # from 127.0.0.1: its own slots are free
            joined_in = time.monotonic() - started
            # the same address as a flood: busy at first, in once the flood's slots free
            more = await flood(srv.port, "127.0.0.1", 4)
            await eventually(lambda: srv._pending.get("127.0.0.1") == 4, 5, "a full address")
            c = await join(ids["c"], inv)
            try:
                assert joined_in < 1.0, joined_in
                await exchange(a, b, b"during the flood")
                await exchange(c, a, b"after busy")
                assert srv._members == 3
            finally:
                for w in held + more:
                    w.close()
                await close_all(a, b, c)

    run(main())
