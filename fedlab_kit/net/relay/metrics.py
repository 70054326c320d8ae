"""What the relay counts, served as ``/healthz`` and Prometheus ``/metrics``.

``fedlab relay --metrics-port 9100`` answers on that port (HTTP, the listen host):

* ``GET /healthz``: ``200`` and a JSON summary while the relay serves;
* ``GET /metrics``: the Prometheus text format: rooms, members present, bytes and frames in
  and out, bytes waiting in mailboxes against their cap, handshakes in progress, rooms
  opened and closed, and rejections by reason (``busy``, ``bad-grant``, ``relay-full``...).

The counts are of traffic only: room names, party names and addresses are never exported.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .server import RelayServer

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class RelayStats:
    """Counters the relay keeps as it runs (gauges are read from its state at scrape)."""

    bytes_in: int = 0
    bytes_out: int = 0
    frames_in: int = 0
    frames_out: int = 0
    rooms_opened: int = 0
    rooms_closed: int = 0
    rejections: Counter[str] = field(default_factory=Counter)

    def reject(self, code: str) -> None:
        self.rejections[code] += 1


def snapshot(server: RelayServer) -> dict[str, Any]:
    """The relay's figures now, as ``/healthz`` shows them."""
    stats = server.stats
    return {
        "status": "ok", "epoch": server.epoch, "rooms": len(server.rooms),
        "members_present": sum(len(r.present()) for r in server.rooms.values()),
        "handshakes": sum(server._pending.values()),
        "mailbox_bytes": server.budget.used, "mailbox_cap_bytes": server.budget.cap,
        "bytes_in": stats.bytes_in, "bytes_out": stats.bytes_out,
        "rejections": dict(stats.rejections),
    }


class _RelayCollector(Collector):
    def __init__(self, server: RelayServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Any]:
        now, stats = snapshot(self.server), self.server.stats
        for name, text, value in (
                ("rooms", "Rooms open", now["rooms"]),
                ("members_present", "Members connected, over all rooms",
                 now["members_present"]),
                ("handshakes", "Connections still in the handshake", now["handshakes"]),
                ("mailbox_bytes", "Bytes waiting in all mailboxes", now["mailbox_bytes"]),
                ("mailbox_cap_bytes", "The cap on bytes waiting in all mailboxes",
                 now["mailbox_cap_bytes"])):
            yield GaugeMetricFamily(f"fedlab_relay_{name}", text, value=value)
        for name, text, value in (
                ("bytes_in", "Payload bytes received from parties", stats.bytes_in),
                ("bytes_out", "Payload bytes delivered to parties", stats.bytes_out),
                ("frames_in", "Frames received from parties", stats.frames_in),
                ("frames_out", "Frames delivered to parties", stats.frames_out),
                ("rooms_opened", "Rooms opened", stats.rooms_opened),
                ("rooms_closed", "Rooms closed (idle or expired)", stats.rooms_closed)):
            yield CounterMetricFamily(f"fedlab_relay_{name}", text, value=value)
        rejected = CounterMetricFamily("fedlab_relay_rejections", "Connections or frames "
                                       "refused, by reason", labels=["reason"])
        for code, count in sorted(stats.rejections.items()):
            rejected.add_metric([code], count)
        yield rejected


def registry_for(server: RelayServer) -> CollectorRegistry:
    """A Prometheus registry holding this relay's figures only."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_RelayCollector(server))
    return registry


async def serve_metrics(server: RelayServer, host: str, port: int) -> Any:
    """Serve ``/healthz`` and ``/metrics`` for ``server`` (plain HTTP, through the
    websockets server's request hook: every request is answered, none upgraded)."""
    from websockets.asyncio.server import serve

    registry = registry_for(server)

    def answer(connection: Any, request: Any) -> Any:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            response = connection.respond(HTTPStatus.OK, json.dumps(snapshot(server)) + "\n")
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "application/json"
        elif path == "/metrics":
            response = connection.respond(HTTPStatus.OK, generate_latest(registry).decode())
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = PROMETHEUS_TEXT
        else:
            response = connection.respond(HTTPStatus.NOT_FOUND, "/healthz or /metrics\n")
        return response

    async def never(_: Any) -> None:  # no request is upgraded
        return None

    return await serve(never, host, port, process_request=answer)
