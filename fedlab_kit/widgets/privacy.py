"""PrivacyPanel: what an epsilon buys, what is left of the budget, what was released."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import pandas as pd

from ..dp.ledger import PrivacyLedger
from ..errors import InputError
from ._background import Panel, box_html, error_html

_SHOWN_COLUMNS = ["id", "time", "query", "mechanism", "epsilon", "delta", "noise_scale",
                  "accuracy"]


#: a query to preview: the L1 sensitivity of plain counts, or (epsilon, alpha) -> Preview
QuerySpec = float | Callable[[float, float], Any]


def _crowd(eps: float, alpha: float) -> Any:
    from ..dp.preview import preview_crowd

    return preview_crowd(eps, 5, alpha=alpha)


def _funnel(eps: float, alpha: float) -> Any:
    from ..dp.preview import preview_funnel

    return preview_funnel(eps, 3, alpha=alpha)


#: the kit's own releases with the defaults of the role notebooks
DEFAULT_QUERIES: dict[str, QuerySpec] = {
    "joint crowd per cell (each person in at most 5 cells)": _crowd,
    "ad funnel (3 campaigns: one exit per campaign)": _funnel,
}


class PrivacyPanel(Panel):
    """An epsilon slider with the accuracy it buys (before spending anything) for the query
    picked in "Query", the remaining budget and the releases recorded on ``ledger``. It
    only informs: releases are made by the analytics functions, which spend on the same
    ledger; the panel updates after every release made through that ledger object (and
    on Refresh, e.g. after releases made by another process).

    ``queries`` maps a query's name to the L1 sensitivity of its counts (see
    :func:`fedlab_kit.dp.sensitivity_for`) or to a function ``(epsilon, alpha) ->``
    :class:`~fedlab_kit.dp.preview.Preview` (default :data:`DEFAULT_QUERIES`: the kit's
    crowd and funnel, with their budget shares); ``sensitivity`` instead previews a single
    custom query; ``alpha`` is the miss probability of the intervals.
    """

    def __init__(self, ledger: PrivacyLedger, sensitivity: float | None = None, *,
                 queries: dict[str, QuerySpec] | None = None, alpha: float = 0.05,
                 epsilon: float | None = None) -> None:
        self.ledger = ledger
        if sensitivity is not None:
            queries = {f"custom query (sensitivity {sensitivity:g})": sensitivity}
        self.queries = dict(queries if queries is not None else DEFAULT_QUERIES)
        if not self.queries:
            raise InputError("PrivacyPanel needs at least one query to preview")
        self.query = widgets.Dropdown(options=list(self.queries), description="Query",
                                      layout=widgets.Layout(width="60%"))
        self._sensitivity = self.queries[self.query.value]
        self.alpha = alpha
        self.accuracy: float | None = None
        self.preview: Any = None
        total = ledger.total.epsilon
        top = math.log10(total)
        start = epsilon if epsilon is not None else total / 10
        self.epsilon = widgets.FloatLogSlider(
            value=start, base=10, min=top - 3, max=top, step=0.01, description="ε",
            readout_format=".3g", continuous_update=True,
            layout=widgets.Layout(width="60%"))
        self.accuracy_html = widgets.HTML("")
        self.budget_bar = widgets.FloatProgress(value=0.0, min=0.0, max=total,
                                                description="ε spent")
        self.budget_html = widgets.HTML("")
        self.releases_html = widgets.HTML("")
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.epsilon.observe(lambda _: self._show_accuracy(), names="value")
        self.query.observe(lambda _: self._pick(), names="value")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.unsubscribe = ledger.subscribe(lambda _: self.refresh())
        self.widget = widgets.VBox([
            widgets.HTML(f"<b>Privacy budget of {html.escape(ledger.party)}</b>"),
            self.query, self.epsilon, self.accuracy_html,
            widgets.HBox([self.budget_bar, self.budget_html]),
            widgets.HTML("<b>Releases so far</b>"), self.releases_html, self.refresh_button,
        ])
        self.refresh()

    @property
    def sensitivity(self) -> QuerySpec:
        return self._sensitivity

    @sensitivity.setter
    def sensitivity(self, value: QuerySpec) -> None:
        self._sensitivity = value
        self._show_accuracy()

    def _pick(self) -> None:
        self.sensitivity = self.queries[self.query.value]

    def refresh(self) -> None:
        """Re-read the ledger: remaining budget, releases, and whether ε still fits."""
        try:
            spent, left, total = (self.ledger.spent(), self.ledger.remaining(),
                                  self.ledger.total)
            releases = self.ledger.releases()
        except Exception as exc:  # a locked or damaged ledger file: say so in the panel
            self.budget_html.value = error_html("Cannot read the privacy ledger", exc)
            return
        self.budget_bar.value = min(spent.epsilon, total.epsilon)
        self.budget_bar.bar_style = "danger" if left.epsilon <= 0 else (
            "warning" if left.epsilon < 0.2 * total.epsilon else "success")
        text = (f"ε remaining {left.epsilon:.4g} of {total.epsilon:.4g} "
                f"(spent {spent.epsilon:.4g})")
        if total.delta > 0:
            text += f"; δ remaining {left.delta:.3g} of {total.delta:.3g}"
        self.budget_html.value = f'<span class="fedlab-remaining">{html.escape(text)}</span>'
        self.releases_html.value = releases_html(releases)
        self._show_accuracy(left.epsilon)

    def _show_accuracy(self, remaining: float | None = None) -> None:
        from ..dp.preview import preview_counts

        eps = float(self.epsilon.value)
        spec = self._sensitivity
        try:
            if callable(spec):
                self.preview = spec(eps, self.alpha)
            else:
                self.preview = preview_counts(eps, spec, alpha=self.alpha,
                                              query=self.query.value)
            self.accuracy = self.preview.accuracy
            if remaining is None:
                remaining = self.ledger.remaining().epsilon
        except Exception as exc:
            self.accuracy = self.preview = None
            self.accuracy_html.value = error_html("Cannot compute the accuracy", exc)
            return
        text = self.preview.summary()
        table = self.preview.by_stage
        extra = "" if table is None else table.to_html(index=False, classes="fedlab-table")
        if eps <= remaining:
            note = box_html(f"{text} It fits the remaining budget (ε {remaining:.4g}).", "ok")
        else:
            note = box_html(f"{text} That is more than the remaining budget "
                            f"(ε {remaining:.4g}): such a release would be refused.",
                            "warning")
        self.accuracy_html.value = f'<div class="fedlab-accuracy">{note}{extra}</div>'


def releases_html(frame: pd.DataFrame) -> str:
    """The ledger's releases as a small HTML table (``meta`` reduced to its accuracy)."""
    if frame.empty:
        return '<i class="fedlab-releases">No releases yet.</i>'
    shown = frame.copy()
    shown["accuracy"] = pd.to_numeric(pd.Series([_meta_value(m, "accuracy")
                                                 for m in shown["meta"]], dtype=object),
                                      errors="coerce").to_numpy()
    shown["time"] = shown["time"].astype(str).str.slice(0, 19).str.replace("T", " ")
    return shown[_SHOWN_COLUMNS].to_html(
        index=False, na_rep="", border=0, classes="fedlab-releases", escape=True,
        float_format=lambda x: f"{x:.4g}")


def _meta_value(meta: Any, key: str) -> Any:
    try:
        value = json.loads(meta).get(key)
    except (TypeError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int | float) else None
