"""PsiPanel: private set intersection of one column of a frame, from a button."""

from __future__ import annotations

import html
import re
from typing import Any

import ipywidgets as widgets
import pandas as pd

from ..errors import FedlabError, InputTypeError
from ..net.session import Party
from ..psi.api import PROTOCOL_NAMES
from ._background import Background, TaskPanel, box_html, error_html

_BUCKET = re.compile(r"bucket (\d+)/(\d+)")
_STEPS = 100  # progress bar steps per bucket
_OWN_OPTIONS = {"reveal", "duplicates", "normalize", "progress", "peers", "session"}


AS_TYPED = "typed"  # the normalize option that keeps IDs as typed (normalize=None)


class PsiPanel(TaskPanel):
    """Pick the ID column and the options, press Run: PSI runs in the background.

    ``party`` is a connected :class:`~fedlab_kit.net.session.Party` or a
    :class:`~fedlab_kit.widgets.ConnectPanel` (its party is used at Run time). Every peer
    must run PSI at the same time with the same options (``session``, ``peers``, reveal
    mode). Further keyword arguments (``workers``, ``timeout``, ``receivers``,
    ``bucket_size``, ``checkpoint_dir``) go to :func:`fedlab_kit.psi.psi` unchanged.

    After a run, ``panel.result`` is the :class:`~fedlab_kit.psi.PsiResult` and
    ``panel.aligned`` this party's rows of the common customers in the shared order
    (``None`` when the intersection was not revealed to this party).
    """

    def __init__(self, party: Any, frame: pd.DataFrame | None = None, *,
                 peers: list[str] | None = None, session: str = "psi",
                 **psi_options: Any) -> None:
        clash = _OWN_OPTIONS & set(psi_options)
        if clash:
            raise InputTypeError(f"PsiPanel sets {sorted(clash)} itself (widgets or arguments)")
        self.party_source = party
        self.peers = peers
        self.session = session
        self.psi_options = psi_options
        self.result: Any = None
        self.aligned: pd.DataFrame | None = None
        self.id_column = widgets.Dropdown(options=[("(choose the ID column)", None)],
                                          value=None, description="ID column")
        self.reveal = widgets.ToggleButtons(
            options=[("intersection", "intersection"), ("count only", "cardinality")],
            value="intersection", description="Reveal",
            tooltips=["every party learns the common customers",
                      "every party learns only how many customers are common"])
        self.duplicates = widgets.Dropdown(
            options=[("refuse the run", "raise"), ("keep the first row", "first")],
            value="raise", description="Duplicates")
        # no option may have the value None: ipywidgets 8 shows it as no selection (blank)
        self.normalize = widgets.Dropdown(
            options=[("as typed (42 ≠ '42')", AS_TYPED), ("as text", "str"),
                     ("text, trimmed", "strip"), ("text, trimmed, lower case", "lower")],
            value=AS_TYPED, description="IDs")
        self.run_button = widgets.Button(description="Run PSI", button_style="primary",
                                         icon="play")
        self.progress = widgets.IntProgress(value=0, min=0, max=_STEPS, description="Progress")
        self.progress_label = widgets.HTML("")
        self.status = widgets.HTML("")
        self.result_html = widgets.HTML("")
        self._task = Background(self.status, name="fedlab-psi")
        self._frame: pd.DataFrame | None = None
        self.run_button.on_click(self._on_run)
        self.widget = widgets.VBox([
            widgets.HTML("<b>Private set intersection</b>"), self.id_column, self.reveal,
            self.duplicates, self.normalize, self.run_button,
            widgets.HBox([self.progress, self.progress_label]), self.status, self.result_html,
        ])
        self.frame = frame

    # ------------------------------------------------------------------ state
    @property
    def frame(self) -> pd.DataFrame | None:
        """The analyst's table; setting it refills the ID column choices."""
        return self._frame

    @frame.setter
    def frame(self, frame: pd.DataFrame | None) -> None:
        if frame is not None and not isinstance(frame, pd.DataFrame):
            raise InputTypeError(f"PsiPanel needs a pandas DataFrame, got {type(frame).__name__}")
        self._frame = frame
        columns = [] if frame is None else list(frame.columns)
        self.id_column.options = [("(choose the ID column)", None),
                                  *((str(c), c) for c in columns)]
        guesses = [c for c in columns if str(c).lower().replace("-", "_").endswith("id")]
        self.id_column.value = guesses[0] if len(guesses) == 1 else None


    # -------------------------------------------------------------------- run
    def _party(self) -> Party:
        source = self.party_source
        party = getattr(source, "party", source) if not isinstance(source, Party) else source
        if party is None:
            raise FedlabError("not connected: connect to the room first")
        return party

    def _inputs(self) -> tuple[Party, pd.DataFrame, Any]:
        frame = self._frame
        if frame is None:
            raise FedlabError("no table: give the panel a DataFrame (panel.frame = df)")
        column = self.id_column.value
        if column is None:
            raise FedlabError("choose the ID column first")
        if column not in frame.columns:
            raise FedlabError(f"the table has no column {column!r}")
        if not isinstance(frame[column], pd.Series):
            raise FedlabError(f"the table has several columns named {column!r}")
        return self._party(), frame, column

    def _on_run(self, _: Any = None) -> None:
        if self._task.busy:
            self.status.value = box_html(
                "A PSI run is already in progress: wait for it to finish before starting "
                "another.", "warning", "Run refused")
            return
        try:
            party, frame, column = self._inputs()
        except FedlabError as exc:
            self.status.value = error_html("Cannot run PSI", exc)
            return
        # the earlier result stays until this run succeeds
        self.progress.max, self.progress.value = _STEPS, 0
        self.progress.bar_style = "info"
        self.progress_label.value = "waiting for the peers…"
        peers = self.peers if self.peers is not None else party.peers
        self.status.value = box_html(
            f"Running PSI on column {str(column)!r} with {', '.join(peers)} (session "
            f"{self.session!r}); each of them must start it too.", "info")
        self.run_button.description = "Running…"
        options = {"reveal": self.reveal.value, "duplicates": self.duplicates.value,
                   "normalize": None if self.normalize.value == AS_TYPED
                   else self.normalize.value}
        self._task.start(self._run, party, frame, column, options, title="PSI failed",
                         on_success=self._show_result, on_done=self._finished)

    def _run(self, party: Party, frame: pd.DataFrame, column: Any,
             options: dict[str, Any]) -> tuple[Any, pd.DataFrame | None]:
        result = party.psi(frame[column], peers=self.peers, session=self.session,
                           progress=self._on_progress, **options, **self.psi_options)
        aligned = None if result.rows is None else result.align(frame)
        return result, aligned

    def _on_progress(self, label: str, done: int, total: int) -> None:
        """The protocol's progress (called in the party's loop thread)."""
        match = _BUCKET.search(label)
        bucket, buckets = (int(match[1]), int(match[2])) if match else (1, 1)
        if self.progress.max != _STEPS * buckets:
            self.progress.max = _STEPS * buckets
        step = _STEPS * done // total if total > 0 else 0
        self.progress.value = min(self.progress.max, (bucket - 1) * _STEPS + step)
        self.progress_label.value = html.escape(f"{label}: step {done} of {total}")

    def _finished(self) -> None:
        self.run_button.description = "Run PSI"
        failed = self._task.error is not None
        self.progress.bar_style = "danger" if failed else "success"
        if failed:
            self.progress_label.value = "failed"
            if self.result is not None:
                self.result_html.value = (
                    "<p><i>This run failed; the result below is the earlier one.</i></p>"
                    + result_html(self.result, self.aligned))

    def _show_result(self, outcome: tuple[Any, pd.DataFrame | None]) -> None:
        self.result, self.aligned = outcome
        self.result_html.value = result_html(self.result, self.aligned)
        self.status.value = box_html(f"PSI finished in {self.result.seconds:.1f} s.", "ok")


def result_html(result: Any, aligned: pd.DataFrame | None) -> str:
    """A small table of what a :class:`~fedlab_kit.psi.PsiResult` says."""
    report = result.report
    if result.size < 0:
        common = "not revealed to this party"
    elif result.rows is None:
        common = f"{result.size} (count only)"
    else:
        common = str(result.size)
    sizes = ", ".join(f"{p}: {n}" for p, n in sorted(result.sizes.items()))
    rows = [("Common customers", common), ("Input sizes (known to all)", sizes),
            ("Your rows", f"{report.n_input} in the table, {report.n_used} took part, "
                          f"{report.n_excluded} excluded")]
    for why, n in report.excluded.items():
        if n:
            examples = ", ".join(str(e) for e in report.examples.get(why, [])[:3])
            rows.append((f"Excluded: {why}", f"{n} rows (e.g. {examples})"))
    if len([t for t, n in report.types.items() if n]) > 1:
        rows.append(("Note", f"mixed ID types {report.types}: int 42 and text '42' are "
                             "different IDs unless IDs are taken as text"))
    if aligned is not None:
        rows.append(("Aligned table", f"{len(aligned)} rows × {aligned.shape[1]} columns in "
                                      "panel.aligned (row i is the same customer everywhere)"))
    buckets = f", {result.buckets} buckets" if result.buckets > 1 else ""
    if result.buckets_resumed:
        buckets += f" ({result.buckets_resumed} resumed)"
    rows.append(("Time", f"{result.seconds:.1f} s{buckets}"))
    rows.append(("Protocol", PROTOCOL_NAMES[result.protocol]))
    body = "".join(f'<tr><th style="text-align:left;padding-right:1em">{html.escape(k)}</th>'
                   f"<td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="fedlab-psi-result">{body}</table>'
