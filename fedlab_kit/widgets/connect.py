"""ConnectPanel: join a room from a key file and an invitation, and watch who is there."""

from __future__ import annotations

import html
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from ..errors import FedlabError
from ..net.identity import Identity, Invitation
from ..net.session import Party, PartyOptions
from ._background import Background, Panel, box_html, error_html, full_width

_STATE_COLOURS = {"present": "#2e7d32", "absent": "#757575", "left": "#757575",
                  "lost": "#c62828", "restarted": "#1565c0"}


class ConnectPanel(Panel):
    """Key file + invitation, Connect / Disconnect, and a live presence list of the peers.

    ``panel.party`` is the connected :class:`~fedlab_kit.net.session.Party` (``None`` before
    connecting and after disconnecting); hand it (or the panel itself) to the other panels.
    """

    def __init__(self, identity_path: str | os.PathLike[str] | None = None,
                 invitation: str | Invitation | None = None, *,
                 options: PartyOptions | None = None, connect_timeout: float = 30.0,
                 close_timeout: float = 10.0) -> None:
        self.party: Party | None = None
        self.options = options
        self.connect_timeout = connect_timeout
        self.close_timeout = close_timeout
        if isinstance(invitation, Invitation):
            invitation = invitation.to_string()
        layout = full_width()
        self.key_file = widgets.Text(
            value="" if identity_path is None else str(identity_path), description="Key file",
            placeholder="retailer.key (from `fedlab keygen`)", layout=layout)
        self.invitation_text = widgets.Textarea(
            value=invitation or "", description="Invitation",
            placeholder="fedlab-invite2|… or @invitation.txt", layout=layout)
        self.connect_button = widgets.Button(description="Connect", button_style="primary",
                                             icon="plug")
        self.disconnect_button = widgets.Button(description="Disconnect", disabled=True,
                                                icon="times")
        self.status = widgets.HTML(box_html("Not connected.", "info"))
        self.presence_list = widgets.HTML("")
        self.log = widgets.Output(layout=widgets.Layout(max_height="8em", overflow="auto"))
        self._task = Background(self.status, name="fedlab-connect")
        self._states: dict[str, str] = {}
        self._me: str | None = None
        self._callback: Any = None
        self.connect_button.on_click(self._on_connect)
        self.disconnect_button.on_click(self._on_disconnect)
        self.widget = widgets.VBox([
            widgets.HTML("<b>Connect to the room</b>"), self.key_file, self.invitation_text,
            widgets.HBox([self.connect_button, self.disconnect_button]),
            self.status, self.presence_list, self.log,
        ])

    # ------------------------------------------------------------------ state
    @property
    def busy(self) -> bool:
        """Connecting or disconnecting right now."""
        return self._task.busy

    @property
    def presence(self) -> dict[str, str]:
        """Peer -> present / absent / left / lost / restarted, as shown in the panel."""
        return dict(self._states)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for a pending connect / disconnect (for scripts and tests)."""
        return self._task.join(timeout)

    # ---------------------------------------------------------------- connect
    def _read_inputs(self) -> tuple[Identity, Invitation]:
        key = self.key_file.value.strip()
        if not key:
            raise FedlabError("enter the path of your key file (made by `fedlab keygen`)")
        text = self.invitation_text.value.strip()
        if not text:
            raise FedlabError("paste the invitation, or give its file as @invitation.txt")
        key_path = Path(key).expanduser()
        if key_path.is_dir():
            raise FedlabError(f"{str(key_path)!r} is a folder, not a key file")
        try:
            identity = Identity.load(key_path)
        except OSError as exc:
            raise FedlabError(f"cannot read the key file {str(key_path)!r}: "
                              f"{exc.strerror or exc}") from None
        invitation = Invitation.parse(text)
        invitation.card(identity.name)  # not a member: say so before touching the network
        return identity, invitation

    def _on_connect(self, _: Any = None) -> None:
        if self._task.busy:
            self.status.value = box_html("Still busy with the previous request.", "warning")
            return
        if self.party is not None:
            self.status.value = box_html(
                f"Already connected as {self.party.name!r}; disconnect first.", "warning")
            return
        try:
            identity, invitation = self._read_inputs()
        except (FedlabError, ValueError) as exc:
            self.status.value = error_html("Cannot connect", exc)
            return
        self.status.value = box_html(
            f"Connecting as {identity.name!r} to room {invitation.room!r} at "
            f"{invitation.host}:{invitation.port}…", "info")
        self.connect_button.disabled = True
        started = self._task.start(self._connect, identity, invitation, title="Cannot connect",
                                   on_success=self._attach, on_done=self._buttons)
        if not started:  # pragma: no cover - only the kernel thread clicks
            self.status.value = box_html("Still busy with the previous request.", "warning")

    def _connect(self, identity: Identity, invitation: Invitation) -> Party:
        return Party(identity, invitation, self.options, connect_timeout=self.connect_timeout)

    def _attach(self, party: Party) -> None:
        def on_presence(peer: str, event: str) -> None:  # in the party's loop thread
            self._log(f"{peer} {event}")
            self._show_presence(party.presence)

        self.party, self._me, self._callback = party, party.name, on_presence
        self._show_presence(party.presence)
        party.on_presence(on_presence)
        # runs on the loop after the callback is registered: catches events in between
        party.loop.call_soon_threadsafe(lambda: self._show_presence(party.presence))
        inv = party.aio.invitation
        self.status.value = box_html(
            f"Connected as {party.name!r} to room {inv.room!r} at {inv.host}:{inv.port}.", "ok")
        self._log(f"connected as {party.name}")

    # ------------------------------------------------------------- disconnect
    def _on_disconnect(self, _: Any = None) -> None:
        if self._task.busy:
            self.status.value = box_html("Still busy with the previous request.", "warning")
            return
        party = self.party
        if party is None:
            self.status.value = box_html("Not connected.", "info")
            return
        self.disconnect_button.disabled = True
        self.status.value = box_html("Disconnecting…", "info")
        self._task.start(self._disconnect, party, title="Disconnected with an error",
                         on_success=lambda _: self._detached(), on_done=self._buttons)

    def _disconnect(self, party: Party) -> None:
        callback = self._callback
        if callback is not None:
            party.loop.call_soon_threadsafe(party.aio.remove_presence_callback, callback)
        try:
            party.close(flush_timeout=self.close_timeout)
        finally:
            self.party, self._callback = None, None
            self._show_presence({})
            self._log("disconnected")

    def _detached(self) -> None:
        self.status.value = box_html("Disconnected.", "info")

    def close(self) -> None:
        """Disconnect (blocking) if connected; for scripts and tests."""
        self._task.join()
        party = self.party
        if party is not None:
            try:
                self._disconnect(party)
            finally:
                self._buttons()
                self._detached()

    # ---------------------------------------------------------------- display
    def _buttons(self) -> None:
        connected = self.party is not None
        self.connect_button.disabled = connected
        self.disconnect_button.disabled = not connected

    def _log(self, text: str) -> None:
        self.log.append_stdout(f"{datetime.now():%H:%M:%S} {text}\n")

    def _show_presence(self, states: dict[str, str]) -> None:
        self._states = dict(states)
        if not states:
            self.presence_list.value = ""
            return
        rows = []
        if self._me:
            rows.append(f'<tr data-peer="{html.escape(self._me)}" data-state="you">'
                        f"<td>{html.escape(self._me)}</td><td>you</td></tr>")
        for peer, state in sorted(states.items()):
            colour = _STATE_COLOURS.get(state, "#757575")
            rows.append(
                f'<tr data-peer="{html.escape(peer)}" data-state="{html.escape(state)}">'
                f"<td>{html.escape(peer)}</td>"
                f'<td style="color:{colour}">● {html.escape(state)}</td></tr>')
        self.presence_list.value = (
            '<table class="fedlab-presence"><tr><th style="text-align:left">party</th>'
            '<th style="text-align:left">status</th></tr>' + "".join(rows) + "</table>")
