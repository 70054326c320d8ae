"""Sans-IO reliable link between this party and one peer.

A :class:`PeerLink` turns application messages into numbered chunks, tracks which chunks the
peer has acknowledged end to end, reassembles the peer's chunks into :class:`Envelope` s and
recovers from lost connections and restarted processes by *resume*: the receiving side
names the next chunk it wants and a fresh epoch; the sender rewinds to it and tags what it
sends with that epoch, so anything still in flight from before is recognised as stale.

Guarantees (for one process lifetime of each side): every message is delivered once, in
order, whatever the relay drops on a restart. Within one epoch each chunk is sent exactly
once, so a chunk seen twice is a replay and aborts the session. The sender keeps a reference
to each payload until the peer acknowledges it: memory is bounded by what the application
queued, and :attr:`PeerLink.window` bounds the bytes in flight.

No sockets, no clocks, no threads: the driver calls the ``on_*`` and ``next_frames`` methods.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field

from ..errors import SecurityError
from ..protocol.envelope import Envelope
from .frames import FrameHeader, FrameType

Cursor = tuple[int, int]  # (message seq, chunk index)
#: the largest message a peer may send; a header announcing more is refused before any
#: allocation, and a message's buffer grows only with the chunks that really arrive
MAX_MESSAGE = 4 << 30


@dataclass
class _OutMsg:
    seq: int
    session: str
    kind: str
    payload: memoryview
    n_chunks: int


@dataclass
class _Inbound:
    """Reassembly of the message currently arriving."""

    header: FrameHeader
    buf: bytearray
    filled: int = 0


@dataclass
class Outgoing:
    """A frame the driver must seal and send to the peer."""

    header: FrameHeader
    data: memoryview | bytes = b""


@dataclass
class LinkEvents:
    """What one incoming frame produced."""

    delivered: list[Envelope] = field(default_factory=list)
    send: list[Outgoing] = field(default_factory=list)
    peer_restarted: bool = False


def new_instance_id() -> bytes:
    return os.urandom(8)


class PeerLink:
    """Reliable, resumable, chunked message stream to and from one peer."""

    def __init__(
        self,
        me: str,
        peer: str,
        instance: bytes,
        *,
        chunk_size: int = 4 << 20,
        window: int = 64 << 20,
        max_message: int = MAX_MESSAGE,
    ) -> None:
        if chunk_size <= 0 or window < chunk_size:
            raise ValueError("need 0 < chunk_size <= window")
        self.me, self.peer, self.instance = me, peer, instance
        self.max_message = max_message
        self.chunk_size, self.window = chunk_size, window
        # --- sending side ---
        self._outbox: deque[_OutMsg] = deque()
        self._next_seq = 0
        self._tx: Cursor = (0, 0)  # next chunk to transmit
        self._in_flight: deque[tuple[Cursor, int]] = deque()  # sent, not yet acknowledged
        self._in_flight_bytes = 0
        self._peer_instance = b""  # receiver incarnation we address (from its RESUME)
        self._tx_epoch = 0
        self._epoch_start: Cursor = (0, 0)  # first chunk sent in this epoch
        self.paused = True  # until the peer's RESUME tells us where to start
        # --- receiving side ---
        self._rx_instance = b""  # incarnation of the peer we receive from
        self._rx_data = False  # whether that incarnation has sent us any data
        self._retired: set[bytes] = set()
        self._rx_epoch = 0
        self._expected: Cursor | None = None  # None: take the first chunk 0 of this epoch
        self._inbound: _Inbound | None = None
        self._unacked_bytes = 0
        self._gap_reported: tuple[int, Cursor | None] | None = None

    # ------------------------------------------------------------------ sending
    def queue(self, payload: bytes | bytearray | memoryview, *, session: str, kind: str) -> int:
        """Queue one application message; returns its sequence number."""
        view = memoryview(payload).cast("B")
        n_chunks = max(1, -(-len(view) // self.chunk_size))
        msg = _OutMsg(self._next_seq, session, kind, view, n_chunks)
        self._outbox.append(msg)
        self._next_seq += 1
        return msg.seq

    @property
    def queued_bytes(self) -> int:
        """Bytes of messages not yet acknowledged by the peer."""
        return sum(len(m.payload) for m in self._outbox)

    @property
    def idle(self) -> bool:
        """True when every queued message has been acknowledged."""
        return not self._outbox

    def next_frames(self, max_frames: int = 1 << 30) -> list[Outgoing]:
        """Up to ``max_frames`` frames that may be sent now (window permitting)."""
        out: list[Outgoing] = []
        if self.paused:
            return out
        while self._outbox and len(out) < max_frames:
            msg = self._find(self._tx[0])
            if msg is None:
                break
            idx = self._tx[1]
            start = idx * self.chunk_size
            data = msg.payload[start : start + self.chunk_size]
            if self._in_flight and self._in_flight_bytes + max(len(data), 1) > self.window:
                break
            header = FrameHeader(
                FrameType.DATA, self.me, self.peer, self.instance, self._peer_instance,
                self._tx_epoch, msg.seq, idx, msg.n_chunks, len(msg.payload), msg.session,
                msg.kind, cursor_msg=self._epoch_start[0], cursor_chunk=self._epoch_start[1],
            )
            out.append(Outgoing(header, data))
            size = max(len(data), 1)
            self._in_flight.append(((msg.seq, idx), size))
            self._in_flight_bytes += size
            self._tx = (msg.seq, idx + 1) if idx + 1 < msg.n_chunks else (msg.seq + 1, 0)
        return out

    def _find(self, seq: int) -> _OutMsg | None:
        if not self._outbox or seq < self._outbox[0].seq:
            return None
        pos = seq - self._outbox[0].seq
        return self._outbox[pos] if pos < len(self._outbox) else None

    def _on_ack(self, cursor: Cursor) -> None:
        if cursor > self._tx:
            raise SecurityError(self.peer, f"acknowledged chunk {cursor} that was never sent")
        while self._in_flight and self._in_flight[0][0] < cursor:
            self._in_flight_bytes -= self._in_flight.popleft()[1]
        while self._outbox and self._outbox[0].seq < cursor[0]:
            self._outbox.popleft()

    def _on_resume(self, header: FrameHeader) -> None:
        if header.instance == self._peer_instance and header.epoch <= self._tx_epoch:
            return  # stale: we already follow a newer resume of this incarnation
        self._peer_instance = header.instance
        self._tx_epoch = header.epoch
        if header.peer_instance == self.instance and header.cursor_msg >= 0:
            cursor = (header.cursor_msg, header.cursor_chunk)
            self._on_ack(cursor)
            if self._outbox and cursor[0] < self._outbox[0].seq:
                raise SecurityError(self.peer, f"asked to resend acknowledged message {cursor}")
        else:  # the peer holds nothing of ours: start over from our oldest message
            cursor = (self._outbox[0].seq, 0) if self._outbox else (self._next_seq, 0)
        self._tx = self._epoch_start = cursor
        self._in_flight.clear()
        self._in_flight_bytes = 0
        self.paused = False

    # ---------------------------------------------------------------- receiving
    def resume_request(self, *, reply: bool) -> Outgoing:
        """Ask the peer to (re)send from our cursor under a new epoch.

        Used when this party (re)connects (``reply=True``: the peer answers with its own
        resume so that we learn where to restart sending) and when a gap is detected.
        """
        self._rx_epoch += 1
        # a partly received message stays: the resend restarts at the chunk we miss
        cursor = self._expected if self._rx_instance else None
        self._unacked_bytes = 0
        return Outgoing(
            FrameHeader(
                FrameType.RESUME, self.me, self.peer, self.instance, self._rx_instance,
                self._rx_epoch, cursor_msg=cursor[0] if cursor else -1,
                cursor_chunk=cursor[1] if cursor else 0, reply=reply,
            )
        )

    def on_reconnect(self) -> Outgoing:
        """This party's connection to the relay was (re)established."""
        self.paused = True
        return self.resume_request(reply=True)

    def on_frame(self, header: FrameHeader, data: memoryview | bytes) -> LinkEvents:
        """Process one authenticated frame from the peer."""
        ev = LinkEvents()
        if header.sender != self.peer or header.recipient != self.me:
            raise SecurityError(
                self.peer, f"misrouted frame ({header.sender} -> {header.recipient})"
            )
        if header.instance in self._retired:
            return ev  # stale frame from a previous incarnation of the peer
        if header.instance != self._rx_instance:
            # a new incarnation is a restart only if something was exchanged with the old
            # one: a party that only joined and left (``fedlab ping``) lost nothing
            ev.peer_restarted = bool(self._rx_instance) and (self._rx_data or self._next_seq > 0)
            if self._rx_instance:
                self._retired.add(self._rx_instance)
            self._rx_instance, self._rx_data = header.instance, False
            self._expected, self._inbound = None, None
            if header.type != FrameType.RESUME or not header.reply:
                ev.send.append(self.resume_request(reply=False))
        if header.type == FrameType.DATA:
            self._rx_data = True
            self._on_data(header, data, ev)
        elif header.type == FrameType.ACK:
            if header.peer_instance == self.instance:
                self._on_ack((header.cursor_msg, header.cursor_chunk))
        elif header.type == FrameType.RESUME:
            self._on_resume(header)
            if header.reply:
                ev.send.append(self.resume_request(reply=False))
        return ev

    def _on_data(self, h: FrameHeader, data: memoryview | bytes, ev: LinkEvents) -> None:
        if h.peer_instance != self.instance or h.epoch < self._rx_epoch:
            return  # addressed to our previous incarnation or sent before our last resume
        if h.epoch > self._rx_epoch:
            raise SecurityError(self.peer, f"frame from future epoch {h.epoch}")
        here = (h.msg, h.chunk)
        if self._expected is None:  # we asked to start over: only the epoch's first chunk
            if here != (h.cursor_msg, h.cursor_chunk) or h.chunk != 0:
                return self._gap(ev)
            self._expected = here
        if here < self._expected:
            raise SecurityError(self.peer, f"replayed frame {here}, expected {self._expected}")
        if here > self._expected:
            return self._gap(ev)
        self._accept(h, data, ev)

    def _accept(self, h: FrameHeader, data: memoryview | bytes, ev: LinkEvents) -> None:
        if not (0 <= h.chunk < h.n_chunks) or h.total < 0:
            raise SecurityError(self.peer, f"inconsistent chunk header {h}")
        if h.total > self.max_message:
            raise SecurityError(self.peer, f"message {h.msg} announces {h.total} bytes, more "
                                           f"than the {self.max_message} a message may have")
        if h.chunk == 0:
            if h.n_chunks == 1:
                self._deliver(h, bytes(data), ev)
                return self._advance(h, len(data), ev)
            self._inbound = _Inbound(h, bytearray())  # grows with the chunks that arrive
        inbound = self._inbound
        if inbound is None or (inbound.header.msg, inbound.header.total) != (h.msg, h.total):
            raise SecurityError(self.peer, f"chunk {h.chunk} of message {h.msg} out of place")
        end = inbound.filled + len(data)
        if end > h.total or (h.chunk == h.n_chunks - 1 and end != h.total):
            raise SecurityError(self.peer, f"message {h.msg} has the wrong length")
        inbound.buf += data
        inbound.filled = end
        if h.chunk == h.n_chunks - 1:
            self._inbound = None
            self._deliver(h, inbound.buf, ev)
        self._advance(h, len(data), ev)

    def _deliver(self, h: FrameHeader, payload: bytes | bytearray, ev: LinkEvents) -> None:
        ev.delivered.append(Envelope(h.sender, h.recipient, h.session, h.kind, h.msg, payload))

    def _advance(self, h: FrameHeader, nbytes: int, ev: LinkEvents) -> None:
        last = h.chunk == h.n_chunks - 1
        self._expected = (h.msg + 1, 0) if last else (h.msg, h.chunk + 1)
        self._unacked_bytes += max(nbytes, 1)
        if last or self._unacked_bytes >= self.window // 4:
            ev.send.append(self._ack())

    def _ack(self) -> Outgoing:
        self._unacked_bytes = 0
        assert self._expected is not None
        return Outgoing(
            FrameHeader(
                FrameType.ACK, self.me, self.peer, self.instance, self._rx_instance,
                self._rx_epoch, cursor_msg=self._expected[0], cursor_chunk=self._expected[1],
            )
        )

    def _gap(self, ev: LinkEvents) -> None:
        """A chunk is missing (lost with a relay or a connection): ask to resend, once."""
        if self._gap_reported == (self._rx_epoch, self._expected):
            return
        ev.send.append(self.resume_request(reply=False))
        self._gap_reported = (self._rx_epoch, self._expected)
