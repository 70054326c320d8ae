"""The ``fedlab`` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import FedlabError
from .net.identity import Identity, Invitation, PartyCard


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc)) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fedlab")
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def main(log_level: str) -> None:
    """fedlab-kit: joint analytics across organisations without pooling raw data."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")


# ---------------------------------------------------------------------------- relay
@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0: any free port, printed on start).")
@click.option("--rooms", "rooms_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Invitations file (one per line): these rooms exist.")
@click.option("--organisers", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Party cards (one per line) of the organisers whose signed invitations "
                   "(fedlab invite --sign-with) open rooms.")
@click.option("--open-rooms", is_flag=True,
              help="Let anyone who reaches the relay open a room by joining it (the default "
                   "on a loopback address only; off it, for a closed network).")
@click.option("--memory-mb", default=1024, show_default=True, type=click.IntRange(1, 1 << 20),
              help="Cap on undelivered messages over all mailboxes together.")
@click.option("--room-idle-hours", default=24.0, show_default=True,
              type=click.FloatRange(0, min_open=True),
              help="Close a room nobody has joined for this long (its waiting frames go).")
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="Serve /healthz and Prometheus /metrics on this port.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="Address for /healthz and /metrics (0.0.0.0 in a container).")
@click.option("--trusted-proxy", "trusted_proxies", multiple=True, metavar="ADDR",
              help="A reverse proxy (address or network, repeatable) whose X-Forwarded-For "
                   "names the party, for the per-address handshake limits.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json: one JSON object per log line (for log shippers).")
@click.option("--max-frame-mb", default=16, show_default=True, type=click.IntRange(1, 256),
              help="Largest frame accepted; larger messages are chunked by the parties.")
@click.option("--mailbox-mb", default=128, show_default=True, type=click.IntRange(1, 1 << 16),
              help="Per-party queue; a full queue pauses the senders (backpressure).")
@click.option("--ws-port", type=click.IntRange(0, 65535),
              help="Also accept WebSocket connections on this port (wss with --tls-cert), "
                   "for parties behind HTTP proxies or a reverse proxy in front.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM certificate: speak TLS (make one with `fedlab tls-cert`).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The certificate's PEM private key.")
@click.option("--heartbeat-timeout", default=30.0, show_default=True,
              help="Seconds of silence after which a party counts as lost.")
def relay(host: str, port: int, rooms_file: Path | None, organisers: Path | None,
          open_rooms: bool, memory_mb: int, room_idle_hours: float, metrics_port: int | None,
          metrics_host: str,
          trusted_proxies: tuple[str, ...], log_format: str, max_frame_mb: int,
          mailbox_mb: int, ws_port: int | None, tls_cert: Path | None, tls_key: Path | None,
          heartbeat_timeout: float) -> None:
    """Run the message relay (routes sealed frames; never sees payloads)."""
    from .net.relay.logs import use_json_logs
    from .net.relay.server import RelayConfig, RelayServer

    if log_format == "json":
        use_json_logs()
    config = RelayConfig(host=host, port=port, max_frame=max_frame_mb << 20,
                         mailbox_bytes=mailbox_mb << 20, heartbeat_timeout=heartbeat_timeout,
                         rooms_file=rooms_file, organisers=organisers,
                         open_rooms=True if open_rooms else None,
                         memory_bytes=memory_mb << 20, room_idle_seconds=room_idle_hours * 3600,
                         tls_cert=tls_cert, tls_key=tls_key, ws_port=ws_port,
                         metrics_port=metrics_port, metrics_host=metrics_host,
                         trusted_proxies=trusted_proxies)

    async def serve() -> None:
        try:
            server = RelayServer(config)
        except FedlabError as exc:
            _fail(exc)
        await server.start()
        click.echo(f"fedlab relay listening on {host}:{server.port}", err=False)
        if server.ws_port is not None:
            scheme = "wss" if server.pin else "ws"
            click.echo(f"WebSocket on {host}:{server.ws_port} ({scheme}://HOST:PORT/PATH, any "
                       "path)")
        if server.pin:
            click.echo(f"TLS: invitations name tls://HOST:{server.port} with --pin {server.pin}")
        if server.metrics_port is not None:
            click.echo(f"/healthz and /metrics on {metrics_host}:{server.metrics_port}")
        sys.stdout.flush()
        if open_rooms:
            click.echo("warning: open rooms: anyone reaching this port can open a room "
                       "(pass --rooms or --organisers to allow only invited rooms)", err=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.close()

    try:
        asyncio.run(serve())
    except OSError as exc:
        _fail(OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}"))


# ----------------------------------------------------------------------- identities
@main.command()
@click.argument("name")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Key file to write (default: NAME.key). Keep it private.")
def keygen(name: str, out: Path | None) -> None:
    """Create a party identity; prints the public card to send to peers."""
    try:
        ident = Identity.generate(name)
        path = ident.save(out or Path(f"{name}.key"))
    except FedlabError as exc:
        _fail(exc)
    click.echo(f"# private key written to {path} (keep it secret)", err=True)
    click.echo(ident.card.to_string())


@main.command("tls-cert")
@click.option("--host", required=True, help="The relay's host name or IP address.")
@click.option("--out", default=".", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder for relay.crt and relay.key (the key readable by you only).")
def tls_cert(host: str, out: Path) -> None:
    """Make a self-signed TLS certificate for the relay and print its pin."""
    from .net.relay.tls import make_self_signed

    pin = make_self_signed(host, out / "relay.crt", out / "relay.key")
    click.echo(json.dumps({"cert": str(out / "relay.crt"), "key": str(out / "relay.key"),
                           "pin": pin}))


@main.command()
@click.option("--relay", "relay_addr", required=True,
              help="The relay: tcp://HOST:PORT, tls://HOST:PORT, ws[s]://HOST[:PORT]/PATH,"
                   " or HOST:PORT (tcp).")
@click.option("--pin", default="", help="sha256:... pin of a TLS relay's certificate.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Or the relay's certificate file: its pin goes into the invitation.")
@click.option("--room", help="Room name (default: random).")
@click.option("--sign-with", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The organiser's key file: sign the invitation so that a relay run with "
                   "--organisers opens the room.")
@click.option("--days", default=30.0, show_default=True, type=click.FloatRange(0, 366,
                                                                            min_open=True),
              help="How long the signed invitation opens the room.")
@click.argument("cards", nargs=-1, required=True)
def invite(relay_addr: str, pin: str, tls_cert: Path | None, room: str | None,
           sign_with: Path | None, days: float, cards: tuple[str, ...]) -> None:
    """Make a room invitation from the members' cards (strings or @file)."""
    from .net.relay.tls import pin_of_file

    try:
        if tls_cert is not None:
            pin = pin_of_file(tls_cert)
        parsed = [PartyCard.from_string(Path(c[1:]).read_text() if c.startswith("@") else c)
                  for c in cards]
        invitation = Invitation.to_relay(relay_addr, room, parsed, pin=pin)
        if sign_with is not None:
            invitation = invitation.granted_by(Identity.load(sign_with), days=days)
        click.echo(invitation.to_string())
    except (FedlabError, OSError) as exc:
        _fail(exc)


@main.command()
@click.option("--key", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--invitation", required=True, help="Invitation string or @file.")
@click.option("--wait", default=0.0, show_default=True, help="Seconds to wait for peers.")
def ping(key: Path, invitation: str, wait: float) -> None:
    """Join the room, print who is present, leave."""
    import time

    from .net.session import Party

    try:
        inv = Invitation.parse(invitation)
        with Party(Identity.load(key), inv) as party:
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(
                    v != "present" for v in party.presence.values()):
                time.sleep(0.1)
            click.echo(json.dumps({"me": party.name, "room": inv.room, "relay": inv.url,
                                   "transport": inv.url.split("://")[0],
                                   "pin": inv.pin or None, "presence": party.presence}))
    except FedlabError as exc:
        _fail(exc)


# ------------------------------------------------------------------------------ psi
def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


@main.command("psi")
@click.option("--key", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--invitation", required=True, help="Invitation string or @file.")
@click.option("--input", "input_path", required=True,
              help="CSV or Parquet file with one row per customer, or a folder or glob of "
              "them (read a partition at a time, never whole).")
@click.option("--column", required=True, help="The ID column.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the aligned rows (CSV or Parquet); for a folder or glob "
              "input, the column 'row' (position in the dataset, files in name order) in "
              "the shared order.")
@click.option("--peers", help="Comma-separated peers (default: everyone in the room).")
@click.option("--reveal", default="intersection", show_default=True,
              type=click.Choice(["intersection", "cardinality"]))
@click.option("--receivers", help="Comma-separated parties who learn the result (default all).")
@click.option("--duplicates", default="raise", show_default=True,
              type=click.Choice(["raise", "first"]))
@click.option("--normalize", type=click.Choice(["str", "strip", "lower"]))
@click.option("--session", default="psi", show_default=True,
              help="Same value at every party; distinct per concurrent PSI run.")
@click.option("--timeout", default=600.0, show_default=True,
              help="Seconds to wait for any one peer message.")
@click.option("--checkpoint", type=click.Path(file_okay=False, path_type=Path),
              help="Keep finished buckets here; rerunning with it resumes an interrupted run.")
@click.option("--bucket-size", default=1_000_000, show_default=True, type=click.IntRange(1),
              help="IDs per bucket (same value at every party); bounds memory.")
@click.option("--cluster", help="Where this party's curve work runs: local:N (a Dask "
              "LocalCluster), tcp://SCHEDULER:8786 (your Dask cluster) or processes:N "
              "(default: this machine's cores).")
@click.option("--protocol", default="auto", show_default=True,
              type=click.Choice(["auto", "ecdh", "kkrt"]),
              help="ecdh: two or three parties; kkrt: two parties, OT extension, faster; "
              "auto: kkrt for two parties revealing the intersection (same value at every "
              "party).")
def psi_cmd(key: Path, invitation: str, input_path: str, column: str, out: Path | None,
            peers: str | None, reveal: str, receivers: str | None, duplicates: str,
            normalize: str | None, session: str, timeout: float, checkpoint: Path | None,
            bucket_size: int, cluster: str | None, protocol: str) -> None:
    """Private set intersection of a file's ID column with the peers; writes aligned rows."""
    import pandas as pd
    from tqdm import tqdm

    from .net.session import Party
    from .psi import PartitionedIds
    from .tables import read_table, write_table

    try:
        frame: Any = None
        if Path(input_path).is_file():
            frame = read_table(input_path, column)
            if column not in frame.columns:
                raise FedlabError(f"{input_path} has no column {column!r}; columns: "
                                  f"{[str(c) for c in frame.columns]}")
            ids: Any = frame[column]
        else:  # a folder or a glob of files
            ids = PartitionedIds(input_path, column)
        with Party(Identity.load(key), Invitation.parse(invitation),
                   cluster=cluster) as party, \
                tqdm(desc="psi batches", unit="batch", disable=None) as bar:

            def progress(_: str, done: int, total: int) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

            result = party.psi(ids, peers=_names(peers), reveal=reveal,  # type: ignore[arg-type]
                               receivers=_names(receivers), duplicates=duplicates,  # type: ignore[arg-type]
                               normalize=normalize, session=session, progress=progress,  # type: ignore[arg-type]
                               timeout=timeout, checkpoint_dir=checkpoint,
                               bucket_size=bucket_size, protocol=protocol)  # type: ignore[arg-type]
        if out is not None and result.rows is not None:
            aligned = result.align(frame) if frame is not None else \
                pd.DataFrame({"row": result.rows})
            write_table(aligned, out, private=True)
    except (FedlabError, OSError, ValueError) as exc:
        _fail(exc)
    click.echo(result.summary(), err=True)
    click.echo(json.dumps({
        "intersection": result.size, "sizes": result.sizes, "rows_in": result.report.n_input,
        "rows_used": result.report.n_used, "excluded": result.report.excluded,
        "out": str(out) if out is not None and result.rows is not None else None,
        "seconds": round(result.seconds, 2)}))


# ----------------------------------------------------------------------------- demo
@main.command()
@click.option("--out", default="out", show_default=True, type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Dataset directory (default: the shipped sample).")
def demo(out: Path, data: Path | None) -> None:
    """Run the end-to-end job on localhost: relay + three party processes on sample data."""
    from .demo import run_demo

    try:
        summary = run_demo(out, data, echo=click.echo)
    except FedlabError as exc:
        _fail(exc)
    click.echo(json.dumps(summary["timings"], indent=2))
    click.echo(f"results in {out}/")


# ------------------------------------------------------------------------- datasets
@main.group()
def datasets() -> None:
    """Synthetic city data with ground truth."""


@datasets.command("make")
@click.option("--persons", default=100_000, show_default=True, type=int)
@click.option("--seed", default=7, show_default=True, type=int)
@click.option("--pois", "n_pois", default=600, show_default=True, type=int)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
def datasets_make(persons: int, seed: int, n_pois: int, out: Path) -> None:
    """Generate a synthetic city (party files + ground truth) into OUT."""
    from .data import make_and_write

    try:
        files = make_and_write(persons, seed, out, n_pois=n_pois)
    except ValueError as exc:
        _fail(exc)
    for name, path in sorted(files.items()):
        click.echo(f"{name}: {path}")


# ---------------------------------------------------------------------------- bench
def _report(report: dict, json_path: Path | None) -> None:
    """Print a bench's JSON report, and write it to ``json_path`` (folders made) if given."""
    text = json.dumps(report, indent=2, default=str)
    click.echo(text)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text + "\n")


@main.group()
def bench() -> None:
    """Benchmarks that print JSON next to their reference."""


@bench.command("soak")
@click.option("--rooms", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--mb", default=1000, show_default=True, type=click.IntRange(1, 1 << 16),
              help="Megabytes exchanged over all rooms together.")
@click.option("--kill-every", default=3.0, show_default=True,
              type=click.FloatRange(0.2, min_open=False),
              help="Seconds between SIGKILLs of the relay (it restarts on the same port).")
@click.option("--message-kb", default=256, show_default=True, type=click.IntRange(1, 1 << 20))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Processes the parties run in (rooms go round-robin to them).")
@click.option("--flood", default=32, show_default=True, type=click.IntRange(0, 4096),
              help="Idle sockets held open against the relay from another address.")
@click.option("--memory-mb", default=256, show_default=True, type=click.IntRange(1, 1 << 20),
              help="The relay's cap on undelivered messages (its --memory-mb).")
@click.option("--timeout", default=900.0, show_default=True, type=click.FloatRange(1),
              help="Seconds the parties have to exchange everything.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def bench_soak_cmd(rooms: int, mb: int, kill_every: float, message_kb: int, workers: int,
                   flood: int, memory_mb: int, timeout: float, json_path: Path | None) -> None:
    """Rooms of three exchange MB through a relay that is SIGKILLed every few seconds:
    messages lost, duplicated or corrupted, the relay's peak RSS."""
    from .bench.soak import bench_soak

    _report(bench_soak(rooms, mb, kill_every, message_kb, workers, flood, memory_mb, timeout),
            json_path)


@bench.command("relay")
@click.option("--mb", default=500, show_default=True, type=click.IntRange(1, 1 << 16))
@click.option("--message-mb", default=64, show_default=True, type=click.IntRange(1, 4096),
              help="Size of each logical message (chunked into frames).")
@click.option("--transport", default="tcp", show_default=True,
              type=click.Choice(["tcp", "tls", "ws", "wss"]),
              help="How the parties reach the relay (tls and wss with a pinned certificate).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def bench_relay_cmd(mb: int, message_mb: int, transport: str, json_path: Path | None) -> None:
    """Encrypted relay throughput between two processes vs a plain TCP copy."""
    from .bench.relay import bench_relay

    _report(bench_relay(mb, message_mb, transport=transport), json_path)


@bench.command("psi")
@click.option("--n", default=1_000_000, show_default=True, type=click.IntRange(1))
@click.option("--overlap", default=0.5, show_default=True, type=click.FloatRange(0, 1))
@click.option("--vs", "vs", type=click.Choice(["openmined", "ecdh"]),
              help="Also run this reference (ecdh: the kit's ECDH-PSI, same relay and sets).")
@click.option("--cluster", help="Each party's work on its own cluster, e.g. local:2 (a Dask "
              "LocalCluster); the process pools run first, for the ratio.")
@click.option("--protocol", default="auto", show_default=True,
              type=click.Choice(["auto", "ecdh", "kkrt"]),
              help="auto: kkrt (two parties), as psi() chooses")
@click.option("--input-partitions", default=0, type=click.IntRange(0),
              help="Each party reads its IDs from this many Parquet files, a partition at "
              "a time (0: a list in memory).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def bench_psi_cmd(n: int, overlap: float, vs: str | None, cluster: str | None, protocol: str,
                  input_partitions: int, json_path: Path | None) -> None:
    """PSI between two processes over the relay (optionally vs a reference)."""
    from .bench.psi import bench_psi

    _report(bench_psi(n, overlap, vs_openmined=vs == "openmined", cluster=cluster,
                      protocol=protocol, vs_ecdh=vs == "ecdh",
                      input_partitions=input_partitions), json_path)


@bench.command("dp")
@click.option("--persons", default=100_000, show_default=True, help="persons in the city")
@click.option("--seed", default=7, show_default=True)
@click.option("--funnel-epsilon", default=1.0, show_default=True, type=click.FloatRange(0.01),
              help="epsilon of the funnel release (all campaigns together)")
@click.option("--seeds", default=1, show_default=True, type=click.IntRange(1),
              help="cities to run (seeds SEED, SEED+1, ...); figures are pooled")
@click.option("--district-share", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="share of the funnel's epsilon for district totals (default: the API's)")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None)
def bench_dp_cmd(persons: int, seed: int, funnel_epsilon: float, seeds: int,
                 district_share: float | None, json_path: Path | None) -> None:
    """Joint DP crowd (P30, interval coverage) and funnel accuracy vs the generator's truth."""
    from .bench.dp import bench_dp

    _report(bench_dp(persons, seed, funnel_epsilon, seeds, district_share), json_path)


@bench.command("boost")
@click.option("--rows", default=100_000, show_default=True)
@click.option("--features", default=40, show_default=True, help="columns over all parties")
@click.option("--parties", default=2, show_default=True, type=click.IntRange(2, 3))
@click.option("--trees", default=10, show_default=True, type=click.IntRange(1))
@click.option("--depth", default=5, show_default=True, type=click.IntRange(1, 12))
@click.option("--bins", default=32, show_default=True, type=click.IntRange(2, 255))
@click.option("--shape", type=click.Choice(["default", "a9a"]), default="default",
              show_default=True, help="a9a: 32,561 x 123 binary columns, 63 at the passive")
@click.option("--min-child-rows", default=20, show_default=True, type=click.IntRange(1),
              help="every party's privacy floor (1: XGBoost's trees)")
@click.option("--cluster", help="Each party's work on its own cluster, e.g. local:2 (a Dask "
              "LocalCluster); the process pools run first, for the ratio.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None)
def bench_boost_cmd(rows: int, features: int, parties: int, trees: int, depth: int, bins: int,
                    shape: str, min_child_rows: int, cluster: str | None,
                    json_path: Path | None) -> None:
    """Encrypted SecureBoost over the relay vs XGBoost (central and label holder alone)."""
    from .bench.boost import bench_boost

    _report(bench_boost(rows, features, parties, trees, depth, bins, shape,
                        min_child_rows=min_child_rows, cluster=cluster), json_path)


@bench.command("lr")
@click.option("--rows", default=100_000, show_default=True)
@click.option("--features", default=40, show_default=True, help="columns over all parties")
@click.option("--parties", default=2, show_default=True, type=click.IntRange(2, 3))
@click.option("--epochs", default=5, show_default=True, type=click.IntRange(1),
              help="conjugate-gradient iterations (one pass over the rows each)")
@click.option("--C", "C", default=1.0, show_default=True, type=click.FloatRange(min=0,
                                                                               min_open=True))
@click.option("--shape", type=click.Choice(["default", "a9a"]), default="default",
              show_default=True, help="a9a: 32,561 x 123 binary columns, 63 at the passive")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None)
def bench_lr_cmd(rows: int, features: int, parties: int, epochs: int, C: float, shape: str,
                 json_path: Path | None) -> None:
    """Encrypted vertical logistic regression over the relay vs scikit-learn (central) and
    the label holder alone."""
    from .bench.lr import bench_lr

    _report(bench_lr(rows, features, parties, epochs, C, shape), json_path)


if __name__ == "__main__":
    main()
