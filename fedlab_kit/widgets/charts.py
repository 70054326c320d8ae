"""The kit's own front-end widgets (anywidget): a funnel-and-lift chart and a live training
curve. Their ES modules live in the repository's top-level ``widgets/`` folder and are
packaged into the wheel as ``fedlab_kit/_widgets``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anywidget
import pandas as pd
import traitlets

from ..errors import InputError

_HERE = Path(__file__).resolve().parent


def front_end(name: str) -> Path:
    """The ES module ``name`` of a custom widget: in the wheel, or in the source tree."""
    for folder in (_HERE.parent / "_widgets", _HERE.parents[1] / "widgets"):
        path = folder / name
        if path.is_file():
            return path
    raise FileNotFoundError(f"the widget module {name!r} is missing from this installation")


def _plain(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None, numpy scalars Python numbers."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class FunnelChart(anywidget.AnyWidget):
    """Stage counts of exposed and control with 95 % intervals, and the lift per stage,
    for one (campaign, district) of a released funnel (:meth:`from_frame`)."""

    _esm = front_end("funnel_chart.js")
    title = traitlets.Unicode("").tag(sync=True)
    stages = traitlets.List(traitlets.Unicode()).tag(sync=True)
    rows = traitlets.List(traitlets.Dict()).tag(sync=True)

    ROW_FIELDS = ("stage", "group", "count", "ci_low", "ci_high", "lift", "lift_ci_low",
                  "lift_ci_high", "suppressed")

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, campaign: str | None = None,
                   district: str | None = None, title: str | None = None) -> FunnelChart:
        """The chart of ``campaign`` in ``district`` (default: the first of each) from the
        frame :func:`~fedlab_kit.analytics.funnel.funnel_for_outcomes` returns."""
        need = {"campaign", "district_id", "group", "stage", "count", "ci_low", "ci_high"}
        missing = sorted(need - set(frame.columns))
        if missing:
            raise InputError(f"FunnelChart needs a released funnel frame; missing {missing}")
        cells = frame[frame["level"] == "campaign"] if "level" in frame.columns else frame
        if cells.empty:
            raise InputError("FunnelChart: the frame holds no funnel rows")
        campaign = cells["campaign"].iloc[0] if campaign is None else campaign
        district = cells["district_id"].iloc[0] if district is None else district
        part = cells[(cells["campaign"] == campaign) & (cells["district_id"] == district)]
        if part.empty:
            raise InputError(f"FunnelChart: no rows for campaign {campaign!r} in district "
                             f"{district!r}")
        stages = [str(s) for s in pd.unique(part["stage"])]
        rows = [{f: _plain(r[f]) for f in cls.ROW_FIELDS if f in part.columns}
                for r in part.to_dict("records")]
        return cls(title=title or f"{campaign} in {district}: exposed vs control",
                   stages=stages, rows=rows)


class TrainingCurve(anywidget.AnyWidget):
    """One metric per tree for every evaluation set, redrawn as each tree arrives."""

    _esm = front_end("training_curve.js")
    metric = traitlets.Unicode("").tag(sync=True)
    history = traitlets.Dict().tag(sync=True)
    n_trees = traitlets.Int(0).tag(sync=True)

    def add(self, metrics: Mapping[str, float]) -> None:
        """Append one tree's metrics (``{"train-auc": 0.8, "validation_0-auc": 0.7}``); the
        curve shows the first metric name it sees for every set that reports it."""
        parsed = [(k.split("-", 1), v) for k, v in metrics.items() if "-" in k]
        if not self.metric and parsed:
            self.metric = sorted(parsed, key=lambda p: p[0][0] == "train")[0][0][1]
        history = {k: list(v) for k, v in self.history.items()}
        for (set_name, name), value in parsed:
            if name == self.metric:
                history.setdefault(set_name, []).append(_plain(float(value)))
        self.history = history  # a new dict: traitlets syncs on assignment only

    def reset(self, n_trees: int, metric: str = "") -> None:
        self.history, self.metric, self.n_trees = {}, metric, int(n_trees)

    @classmethod
    def from_history(cls, history: Sequence[Mapping[str, float]], n_trees: int = 0
                     ) -> TrainingCurve:
        curve = cls(n_trees=n_trees)
        for metrics in history:
            curve.add(metrics)
        return curve
