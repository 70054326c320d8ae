"""The relay's deployment files, used as an operator would: the shipped Caddyfile in front
of the relay with a real Caddy, the relay's own requirements in a fresh venv, and every
command line in the Dockerfile, compose file and systemd unit accepted by `fedlab relay`.

(No Docker engine runs here: the image itself is not built; its install steps are the
fresh-venv test's.)"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from test_relay_inprocess import HOST, close_all, exchange, join, relay, run

from fedlab_kit.cli import relay as relay_command
from fedlab_kit.net.identity import Identity, Invitation
from fedlab_kit.net.relay.tls import make_self_signed

DEPLOY = Path(__file__).resolve().parents[1] / "fedlab_kit" / "deploy"
REPO = DEPLOY.parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _caddy() -> str:
    found = os.environ.get("FEDLAB_CADDY") or shutil.which("caddy")
    if not found:
        pytest.fail("this test needs caddy (apt-get install caddy; make test installs it "
                    "where it can, or set FEDLAB_CADDY)", pytrace=False)
    return found


@pytest.mark.timeout(120)
def test_parties_meet_through_caddy_with_the_shipped_caddyfile(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Caddy terminates TLS with the pinned certificate and forwards /fedlab to the relay's
    WebSocket port; two parties meet through it; the relay counts each party under the
    address Caddy forwards (it trusts Caddy); other paths get a 404 from Caddy."""
    pin = make_self_signed(HOST, tmp_path / "relay.crt", tmp_path / "relay.key")
    port = _free_port()
    caplog.set_level(logging.INFO, logger="fedlab.relay")

    async def main() -> None:
        async with relay(ws_port=0, trusted_proxies=(HOST,)) as server:
            env = {**os.environ, "FEDLAB_HOST": HOST, "FEDLAB_PORT": str(port),
                   "FEDLAB_CERT": str(tmp_path / "relay.crt"),
                   "FEDLAB_KEY": str(tmp_path / "relay.key"),
                   "FEDLAB_UPSTREAM": f"{HOST}:{server.ws_port}",
                   "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
            caddy = subprocess.Popen([_caddy(), "run", "--config", str(DEPLOY / "Caddyfile"),
                                      "--adapter", "caddyfile"], env=env, cwd=tmp_path,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        socket.create_connection((HOST, port), timeout=1).close()
                        break
                    except OSError:
                        if time.monotonic() > deadline or caddy.poll() is not None:
                            out = caddy.stdout.read() if caddy.poll() is not None else b""
                            raise AssertionError(f"caddy did not start: {out[-2000:]!r}") from None
                        await asyncio.sleep(0.2)
                ids = {p: Identity.generate(p) for p in ("retailer", "media")}
                inv = Invitation.to_relay(f"wss://{HOST}:{port}/fedlab", "behind-caddy",
                                          [i.card for i in ids.values()], pin=pin)
                a, b = await join(ids["retailer"], inv), await join(ids["media"], inv)
                try:
                    await exchange(a, b, b"through the reverse proxy")
                finally:
                    await close_all(a, b)
                status = await asyncio.to_thread(_status, f"https://{HOST}:{port}/other")
                assert status == 404
                joins = [r.getMessage() for r in caplog.records if " joined room " in
                         r.getMessage()]
                assert len(joins) == 2 and all(" (via (" in j for j in joins), joins
            finally:
                caddy.terminate()
                caddy.wait(10)

    run(main(), 90)


def _status(url: str) -> int:
    import ssl

    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _relay_args(text: str) -> list[str]:
    """The `fedlab ... relay ARGS` arguments of a shell command line."""
    words = shlex.split(text.replace("\\\n", " "))
    return words[words.index("relay") + 1:]


def _accepts(args: list[str], tmp_path: Path) -> None:
    """`fedlab relay` parses ``args`` (file paths mapped into ``tmp_path``)."""
    make_self_signed("relay.example.org", tmp_path / "relay.crt", tmp_path / "relay.key")
    (tmp_path / "organisers.txt").write_text(Identity.generate("org").card.to_string() + "\n")
    mapped = [str(tmp_path / Path(a).name) if a.startswith("/") and "." in Path(a).name
              else a for a in args]
    context = relay_command.make_context("relay", mapped)
    assert context.params["organisers"] == tmp_path / "organisers.txt"
    assert context.params["log_format"] == "json"


def test_every_shipped_command_line_is_one_the_relay_accepts(tmp_path: Path) -> None:
    unit = (DEPLOY / "fedlab-relay.service").read_text()
    exec_start = next(line for line in unit.replace("\\\n", " ").splitlines()
                      if line.startswith("ExecStart="))
    _accepts(_relay_args(exec_start.split("=", 1)[1]), tmp_path)
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    _accepts(compose["services"]["relay"]["command"], tmp_path)
    assert compose["services"]["relay"]["build"]["dockerfile"] == "fedlab_kit/deploy/Dockerfile"
    docker = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    cmd = next(line for line in docker.splitlines() if line.startswith("CMD "))
    _accepts(yaml.safe_load(cmd[4:]), tmp_path)
    assert '"relay"]' in next(line for line in docker.splitlines()
                              if line.startswith("ENTRYPOINT "))


@pytest.mark.timeout(600)
def test_the_relay_runs_from_its_own_requirements_alone(tmp_path: Path) -> None:
    """What the Dockerfile installs (fedlab-kit without its dependencies, then
    relay-requirements.txt) runs a relay and a ping, without the analytics stack."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", str(REPO)], check=True, timeout=400)
    subprocess.run([*pip, "-r", str(DEPLOY / "relay-requirements.txt")], check=True,
                   timeout=400)
    missing = subprocess.run([str(py), "-c", "import pandas"], capture_output=True)
    assert missing.returncode != 0, "the relay venv should not hold the analytics stack"
    fedlab = str(venv / "bin" / "fedlab")
    cards = []
    for name in ("a", "b"):
        made = subprocess.run([fedlab, "keygen", name], cwd=tmp_path, capture_output=True,
                              text=True, check=True)
        cards.append(made.stdout.strip())
    proc = subprocess.Popen([fedlab, "relay", "--port", "0", "--metrics-port", "0"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert "listening on" in line, line + proc.stderr.read()  # type: ignore[union-attr]
        port = line.rsplit(":", 1)[1].strip()
        invitation = subprocess.run([fedlab, "invite", "--relay", f"127.0.0.1:{port}", *cards],
                                    cwd=tmp_path, capture_output=True, text=True, check=True)
        ping = subprocess.run([fedlab, "ping", "--key", "a.key", "--invitation",
                               invitation.stdout.strip()], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)
        assert ping.returncode == 0, ping.stderr
        assert '"transport": "tcp"' in ping.stdout, ping.stdout
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
