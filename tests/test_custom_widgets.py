"""The kit's own anywidget charts: Python side, and their ES modules drawn in Chromium.

The browser tests load each module from ``widgets/`` into a page with a stand-in for the
anywidget model (``get``, ``on``, ``off``), call ``render``, change a trait as the kernel
would, and read the SVG back from the DOM.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedlab_kit import maps
from fedlab_kit.errors import InputError
from fedlab_kit.maps.errors import MapExportError
from fedlab_kit.widgets import FunnelChart, TrainingCurve
from fedlab_kit.widgets.charts import front_end


def _funnel_frame() -> pd.DataFrame:
    rows = []
    for group, counts in (("exposed", [1000, 300, 200, 90]), ("control", [1000, 200, 150, 80])):
        for stage, count in zip(("persons", "visited", "purchased", "repeat"), counts,
                                strict=True):
            rows.append({"campaign": "c1", "district_id": "D01", "group": group,
                         "stage": stage, "level": "campaign", "count": count,
                         "ci_low": count - 12, "ci_high": count + 12,
                         "lift": 0.5 if group == "exposed" and stage != "persons" else np.nan,
                         "lift_ci_low": 0.2, "lift_ci_high": 0.8,
                         "suppressed": stage == "repeat" and group == "control"})
    total = {"campaign": "all", "district_id": "D01", "group": "all", "stage": "persons",
             "level": "district", "count": 2000, "ci_low": 1990, "ci_high": 2010}
    return pd.DataFrame([*rows, total])


def test_funnel_chart_takes_one_campaign_and_district() -> None:
    chart = FunnelChart.from_frame(_funnel_frame())
    assert chart.stages == ["persons", "visited", "purchased", "repeat"]
    assert len(chart.rows) == 8 and "c1 in D01" in chart.title
    assert chart.rows[0]["lift"] is None  # NaN travels as null, not as invalid JSON
    json.dumps(chart.rows)
    with pytest.raises(InputError, match="no rows for campaign 'c9'"):
        FunnelChart.from_frame(_funnel_frame(), campaign="c9")
    with pytest.raises(InputError, match="missing"):
        FunnelChart.from_frame(pd.DataFrame({"count": [1]}))


def test_training_curve_keeps_one_metric_per_set() -> None:
    curve = TrainingCurve.from_history([
        {"train-auc": 0.70, "validation_0-auc": 0.65},
        {"train-auc": 0.75, "validation_0-auc": 0.66, "validation_0-logloss": 0.6},
    ], n_trees=10)
    assert curve.metric == "auc" and curve.n_trees == 10
    assert curve.history == {"train": [0.70, 0.75], "validation_0": [0.65, 0.66]}
    curve.add({"train-auc": math.nan})
    assert curve.history["train"][-1] is None
    curve.reset(5)
    assert curve.history == {} and curve.n_trees == 5


def test_the_modules_ship_in_the_wheel_layout() -> None:
    for name in ("funnel_chart.js", "training_curve.js"):
        text = front_end(name).read_text()
        assert "export default" in text and "render" in text
    with pytest.raises(FileNotFoundError):
        front_end("nope.js")


def test_the_wheel_packages_the_widget_modules(tmp_path: Path) -> None:
    import sys
    import zipfile

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp_path), str(root)], check=True, capture_output=True, timeout=600)
    (wheel,) = tmp_path.glob("fedlab_kit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"fedlab_kit/_widgets/funnel_chart.js",
            "fedlab_kit/_widgets/training_curve.js"} <= names


# --------------------------------------------------------------------------- in Chromium
_PAGE = """<html><body><div id="out"></div><div id="done">no</div>
<script type="module">
const src = %(src)s;
const traits = %(traits)s;
const handlers = {};
const model = {
  get: (k) => traits[k],
  on: (ev, f) => { (handlers[ev] = handlers[ev] || []).push(f); },
  off: (ev, f) => { handlers[ev] = (handlers[ev] || []).filter((g) => g !== f); },
};
const url = URL.createObjectURL(new Blob([src], {type: "text/javascript"}));
const mod = (await import(url)).default;
const el = document.getElementById("out");
mod.render({model, el});
document.getElementById("first").textContent = el.innerHTML;
Object.assign(traits, %(update)s);
for (const k of Object.keys(%(update)s)) (handlers["change:" + k] || []).forEach((f) => f());
document.getElementById("done").textContent = "yes";
</script><div id="first"></div></body></html>"""


@pytest.fixture(scope="module")
def chromium() -> str:
    try:
        return maps.find_browser()
    except MapExportError as exc:
        pytest.fail(f"these tests need headless Chromium: {exc}", pytrace=False)


def _render(chromium: str, module: str, traits: dict, update: dict, tmp_path: Path
            ) -> tuple[str, str]:
    page = tmp_path / "page.html"
    page.write_text(_PAGE % {"src": json.dumps(front_end(module).read_text()),
                             "traits": json.dumps(traits), "update": json.dumps(update)})
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
           "--proxy-server=127.0.0.1:9", "--virtual-time-budget=3000", "--dump-dom",
           page.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=True).stdout
    assert '<div id="done">yes</div>' in dom, dom[-1500:]
    first = re.search(r'<div id="first">(.*?)</div></body>', dom, re.S)
    final = re.search(r'<div id="out">(.*?)</div><div id="done">', dom, re.S)
    assert first and final
    return first.group(1), final.group(1)


def test_funnel_chart_draws_bars_intervals_and_lift(chromium: str, tmp_path: Path) -> None:
    chart = FunnelChart.from_frame(_funnel_frame())
    traits = {"title": chart.title, "stages": chart.stages, "rows": chart.rows}
    first, final = _render(chromium, "funnel_chart.js", traits,
                           {"title": "after an update"}, tmp_path)
    assert first.count('class="fedlab-bar exposed"') == 4
    assert first.count('class="fedlab-bar control"') == 3  # the suppressed one has no bar
    assert "suppressed (small count)" in first
    assert first.count('class="fedlab-ci"') == 7
    assert first.count('class="fedlab-lift"') == 3 and "lift +50.0% (+20.0% to +80.0%)" in first
    assert "after an update" in final and "after an update" not in first  # redrawn


def test_training_curve_redraws_as_trees_arrive(chromium: str, tmp_path: Path) -> None:
    traits = {"metric": "auc", "n_trees": 5, "history": {"train": [0.7]}}
    update = {"history": {"train": [0.7, 0.75, 0.8], "validation_0": [0.65, 0.67, 0.68]}}
    first, final = _render(chromium, "training_curve.js", traits, update, tmp_path)
    assert first.count('class="fedlab-curve"') == 1 and "auc per tree" in first
    assert final.count('class="fedlab-curve"') == 2
    assert 'data-set="validation_0"' in final and "held-out 0.6800" in final
