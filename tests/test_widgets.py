"""The analyst panels, driven headless (no browser): buttons clicked, values set in code."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from waiting import wait_for

from fedlab_kit import Identity, Invitation, Party
from fedlab_kit.demo.harness import RelayProcess, create_room
from fedlab_kit.dp.ledger import PrivacyLedger
from fedlab_kit.dp.mechanisms import accuracy_for
from fedlab_kit.errors import FedlabError, PeerAborted
from fedlab_kit.widgets import Background, ConnectPanel, PrivacyPanel, PsiPanel

pytestmark = pytest.mark.timeout(120)


def state_of(panel: ConnectPanel, peer: str) -> str | None:
    found = re.search(rf'data-peer="{peer}" data-state="([a-z]+)"', panel.presence_list.value)
    return found[1] if found else None


@pytest.fixture
def room(relay: RelayProcess, tmp_path: Path) -> tuple[Invitation, dict[str, Path]]:
    return create_room(["retailer", "media"], tmp_path, relay.host, relay.port,
                       room=f"w-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def parties() -> Iterator[list[Any]]:
    """Parties and panels to close whatever happens."""
    opened: list[Any] = []
    yield opened
    for thing in reversed(opened):
        # a session that failed has nothing left to clean up
        with contextlib.suppress(Exception):
            if isinstance(thing, Party):
                thing.close(flush_timeout=2)
            else:
                thing.close()


def join(key: Path, inv: Invitation, opened: list[Any]) -> Party:
    party = Party(Identity.load(key), inv)
    opened.append(party)
    return party


def leave(party: Party, opened: list[Any]) -> None:
    """Close a party in the test (closing it twice would wait on a stopped loop)."""
    opened.remove(party)
    party.close(flush_timeout=2)


# ------------------------------------------------------------------ Background
def test_background_reports_errors_and_refuses_a_second_run() -> None:
    import ipywidgets as widgets

    status = widgets.HTML("")
    task = Background(status)
    gate = threading.Event()
    assert task.start(gate.wait, 10, title="t")
    assert task.busy
    assert not task.start(lambda: None), "a second run started while the first was busy"
    gate.set()
    assert task.join(10) and not task.busy

    def fail() -> None:
        raise FedlabError("the relay said <no>")

    assert task.start(fail, title="It failed")
    assert task.join(10)
    assert isinstance(task.error, FedlabError)
    assert "fedlab-error" in status.value and "It failed" in status.value
    assert "the relay said &lt;no&gt;" in status.value  # escaped, no traceback
    assert "Traceback" not in status.value


# ---------------------------------------------------------------- ConnectPanel
def test_connect_panel_shows_peers_arriving_and_leaving(
        room: tuple[Invitation, dict[str, Path]], parties: list[Any]) -> None:
    inv, keys = room
    panel = ConnectPanel()
    parties.append(panel)
    panel.key_file.value = str(keys["retailer"])
    panel.invitation_text.value = "@" + str(keys["retailer"].parent / "invitation.txt")
    panel.connect_button.click()
    assert panel.join(20), "connect did not finish"
    assert panel.party is not None and panel.party.name == "retailer"
    assert "Connected as 'retailer'" in panel.status.value
    assert panel.connect_button.disabled and not panel.disconnect_button.disabled
    assert state_of(panel, "media") == "absent"

    peer = join(keys["media"], inv, parties)
    wait_for(lambda: state_of(panel, "media") == "present", what="media present")
    assert panel.presence["media"] == "present"
    leave(peer, parties)
    wait_for(lambda: state_of(panel, "media") == "left", what="media left")
    wait_for(lambda: "media left" in "".join(o.get("text", "") for o in panel.log.outputs),
             what="log line")

    panel.disconnect_button.click()
    assert panel.join(20)
    assert panel.party is None
    assert "Disconnected" in panel.status.value
    assert not panel.connect_button.disabled


def test_connect_panel_errors_are_shown_not_raised(
        room: tuple[Invitation, dict[str, Path]], tmp_path: Path, parties: list[Any]) -> None:
    inv, keys = room
    bad_key = tmp_path / "garbage.key"
    bad_key.write_text("not a key")
    panel = ConnectPanel(bad_key, inv)
    parties.append(panel)
    panel.connect_button.click()  # fails synchronously, before any thread
    assert "fedlab-error" in panel.status.value
    assert "malformed" in panel.status.value and panel.party is None

    panel.key_file.value = str(tmp_path / "missing.key")
    panel.connect_button.click()
    assert "does not exist" in panel.status.value

    panel.key_file.value = str(keys["retailer"])
    panel.invitation_text.value = "@" + str(tmp_path / "no-such-invitation.txt")
    panel.connect_button.click()
    assert "cannot read the invitation file" in panel.status.value

    # a relay address where nothing listens
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    nowhere = Invitation(inv.host, free_port, inv.room, inv.members)
    panel.invitation_text.value = nowhere.to_string()
    panel.connect_button.click()
    assert panel.join(20)
    assert "cannot reach the relay" in panel.status.value
    assert "fedlab-error" in panel.status.value and panel.party is None
    assert not panel.connect_button.disabled, "Connect stays usable after a failure"

    # the relay refuses a second process under a name already connected
    join(keys["retailer"], inv, parties)
    panel.invitation_text.value = inv.to_string()
    panel.connect_button.click()
    assert panel.join(20)
    assert "relay refused 'retailer'" in panel.status.value
    assert panel.party is None


# -------------------------------------------------------------------- PsiPanel
FRAME = pd.DataFrame({"customer_id": ["a", "b", None, "c", "", "d", "e"],
                      "spend": [10, 20, 30, 40, 50, 60, 70]})
PEER_IDS = ["d", "x", "b", "e", "y"]


def run_peer(party: Party, ids: list[Any], out: dict[str, Any], **kwargs: Any) -> threading.Thread:
    def target() -> None:
        try:
            out["result"] = party.psi(ids, workers=1, timeout=60, **kwargs)
        except Exception as exc:
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_psi_panel_runs_and_reports(room: tuple[Invitation, dict[str, Path]],
                                    parties: list[Any]) -> None:
    inv, keys = room
    me, peer = join(keys["retailer"], inv, parties), join(keys["media"], inv, parties)
    panel = PsiPanel(me, FRAME, workers=1, timeout=60)
    assert [v for _, v in panel.id_column.options] == [None, "customer_id", "spend"]
    assert panel.id_column.value == "customer_id"  # the one column named like an ID
    assert None not in [v for _, v in panel.normalize.options]  # ipywidgets shows None blank

    panel.run_button.click()
    assert panel.busy
    panel.run_button.click()  # while the first run waits for the peer
    assert "already in progress" in panel.status.value

    out: dict[str, Any] = {}
    thread = run_peer(peer, PEER_IDS, out)
    assert panel.join(60), "PSI did not finish"
    thread.join(30)
    assert "error" not in out and panel.error is None, (out, panel.status.value)

    assert panel.result.size == 3
    assert list(panel.aligned["customer_id"]) == [PEER_IDS[i] for i in out["result"].rows]
    assert set(panel.aligned["customer_id"]) == {"b", "d", "e"}
    assert list(panel.aligned["spend"]) == [
        dict(zip(FRAME["customer_id"], FRAME["spend"], strict=True))[i]
        for i in panel.aligned["customer_id"]]
    assert panel.progress.max > 0 and panel.progress.value == panel.progress.max
    text = panel.result_html.value
    assert "<td>3</td>" in text
    assert "media: 5, retailer: 7" in text  # input rows, as the plan shares them
    assert "7 in the table, 5 took part, 2 excluded" in text
    assert "Excluded: null" in text and "Excluded: empty" in text
    assert "PSI finished" in panel.status.value
    assert panel.run_button.description == "Run PSI"

    good = panel.result  # a re-run that fails keeps the earlier result
    panel.frame = pd.DataFrame({"customer_id": ["a", "a", "b"]})
    panel.id_column.value = "customer_id"
    panel.run_button.click()
    again: dict[str, Any] = {}
    thread = run_peer(peer, PEER_IDS, again)
    assert panel.join(60) and isinstance(panel.error, FedlabError)
    thread.join(30)
    assert isinstance(again.get("error"), PeerAborted)
    assert panel.result is good and set(panel.aligned["customer_id"]) == {"b", "d", "e"}
    assert "the result below is the earlier one" in panel.result_html.value
    assert "<td>3</td>" in panel.result_html.value


def test_psi_panel_cardinality_only(room: tuple[Invitation, dict[str, Path]],
                                    parties: list[Any]) -> None:
    inv, keys = room
    me, peer = join(keys["retailer"], inv, parties), join(keys["media"], inv, parties)
    panel = PsiPanel(me, FRAME, workers=1, timeout=60)
    panel.reveal.value = "cardinality"
    panel.run_button.click()
    out: dict[str, Any] = {}
    thread = run_peer(peer, PEER_IDS, out, reveal="cardinality")
    assert panel.join(60)
    thread.join(30)
    assert panel.error is None, panel.status.value
    assert panel.result.size == 3 and panel.aligned is None
    assert "3 (count only)" in panel.result_html.value


def test_psi_panel_input_errors_are_readable(room: tuple[Invitation, dict[str, Path]],
                                             parties: list[Any]) -> None:
    inv, keys = room
    connect = ConnectPanel(keys["retailer"], inv)
    parties.append(connect)
    panel = PsiPanel(connect, pd.DataFrame({"a": [1, 2], "b": [3, 4]}))
    assert panel.id_column.value is None  # no column looks like an ID: nothing guessed
    panel.run_button.click()
    assert "fedlab-error" in panel.status.value and "choose the ID column" in panel.status.value
    assert not panel.busy and panel.result is None

    panel.id_column.value = "a"
    panel.run_button.click()  # the ConnectPanel has not connected yet
    assert "not connected" in panel.status.value and not panel.busy

    empty = PsiPanel(connect)
    empty.run_button.click()
    assert "no table" in empty.status.value
    with pytest.raises(TypeError):
        PsiPanel(connect, reveal="cardinality")


def test_psi_panel_shows_a_failed_run(room: tuple[Invitation, dict[str, Path]],
                                      parties: list[Any]) -> None:
    inv, keys = room
    me, peer = join(keys["retailer"], inv, parties), join(keys["media"], inv, parties)
    dupes = pd.DataFrame({"user_id": ["a", "a", "b"]})
    panel = PsiPanel(me, dupes, workers=1, timeout=60)
    panel.run_button.click()
    out: dict[str, Any] = {}
    thread = run_peer(peer, ["a", "b"], out)
    assert panel.join(60)
    assert panel.error is not None
    assert "fedlab-error" in panel.status.value and "PSI failed" in panel.status.value
    assert "duplicate" in panel.status.value.lower()
    assert "Traceback" not in panel.status.value
    assert panel.progress.bar_style == "danger" and panel.result is None
    thread.join(30)  # the peer is told why at once, although we stay in the room
    assert not thread.is_alive() and isinstance(out.get("error"), PeerAborted)
    assert "'retailer' stopped PSI" in str(out["error"]) and "duplicate" in str(out["error"])


# ---------------------------------------------------------------- PrivacyPanel
def test_privacy_panel_accuracy_budget_and_releases(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite", total_epsilon=2.0, party="retailer")
    panel = PrivacyPanel(ledger, sensitivity=3)
    assert panel.epsilon.max == pytest.approx(0.30103, abs=1e-4)  # log10 of the total
    shown: list[float] = []
    for eps in (0.1, 0.5, 1.0):
        panel.epsilon.value = eps
        expected = accuracy_for(panel.epsilon.value, 3)
        assert panel.accuracy == pytest.approx(expected)
        assert f"off by less than {expected:.3g}" in panel.accuracy_html.value
        shown.append(panel.accuracy)
    assert shown[0] > shown[1] > shown[2], "more epsilon must buy better accuracy"
    assert "No releases yet" in panel.releases_html.value
    assert "remaining 2 of 2" in panel.budget_html.value

    ledger.spend("visits_by_region", "laplace", 0.75, noise_scale=4.0,
                 meta={"accuracy": 12.5})
    assert "remaining 1.25 of 2" in panel.budget_html.value  # updated by the release itself
    assert "visits_by_region" in panel.releases_html.value
    assert "<td>12.5</td>" in panel.releases_html.value
    assert panel.budget_bar.value == pytest.approx(0.75)
    assert "fedlab-ok" in panel.accuracy_html.value  # 1.0 still fits 1.25
    panel.epsilon.value = 1.5
    assert "more than the remaining budget" in panel.accuracy_html.value

    panel.sensitivity = 0  # invalid: shown, not raised
    assert "fedlab-error" in panel.accuracy_html.value and panel.accuracy is None

    other = PrivacyLedger.open(tmp_path / "ledger.sqlite")  # e.g. another process
    other.spend("elsewhere", "laplace", 0.25)
    assert "remaining 1.25 of 2" in panel.budget_html.value
    panel.refresh_button.click()
    assert "remaining 1 of 2" in panel.budget_html.value and "elsewhere" in \
        panel.releases_html.value


def test_privacy_panel_previews_the_queries_that_will_run(tmp_path: Path) -> None:
    import pickle

    from fedlab_kit.widgets.privacy import DEFAULT_QUERIES

    ledger = PrivacyLedger(tmp_path / "ledger.sqlite", total_epsilon=3.0, party="operator")
    panel = PrivacyPanel(ledger, epsilon=1.0)
    assert list(panel.query.options) == list(DEFAULT_QUERIES)
    _crowd, funnel_q = DEFAULT_QUERIES
    # the crowd pays 5% of its epsilon for the bounding estimate: the counts get 0.95
    assert panel.accuracy == pytest.approx(accuracy_for(0.95, 5))
    text = panel.accuracy_html.value
    assert "each person in at most 5 cells" in text and "pairs removed by bounding ε 0.05" in text
    panel.query.value = funnel_q
    from fedlab_kit.dp.preview import preview_funnel

    expected = preview_funnel(1.0, 3)
    assert panel.accuracy == pytest.approx(expected.accuracy)
    assert "district totals ε 0.5" in panel.accuracy_html.value
    assert "district_total_halfwidth" in panel.accuracy_html.value  # the per-stage table
    panel.epsilon.value = 2.0
    assert panel.accuracy < expected.accuracy  # more epsilon, narrower intervals
    # a failing display never fails the release, and listeners stay in their process
    ledger.subscribe(lambda _: 1 / 0)
    assert ledger.spend("crowd", "laplace", 1.0) >= 1
    assert "remaining 2 of 3" in panel.budget_html.value
    assert pickle.loads(pickle.dumps(ledger))._listeners == []
    panel.unsubscribe()
    ledger.spend("crowd again", "laplace", 1.0)
    assert "remaining 2 of 3" in panel.budget_html.value


def test_panels_display_as_their_widget(tmp_path: Path) -> None:
    panel = ConnectPanel()
    bundle = panel._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == \
        panel.widget.model_id
