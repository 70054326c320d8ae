"""TrainingPanel, PassiveTrainingPanel and MapPanel driven headless, and the trainer's Stop.

Buttons are clicked and values set in code; background runs are awaited by polling with a
generous bound (never a wall-clock assertion). Data is small: the machine is shared.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import folium
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from boost_workers import ACTIVE, fit_local, predict_local
from released_frames import HIDDEN_COUNT, SHOWN_COUNT, crowd_cells, district_funnel
from waiting import wait_for

from fedlab_kit import Identity, Party
from fedlab_kit.boost import SecureBoostClassifier, SecureBoostPassive, SecureBoostRegressor
from fedlab_kit.demo.harness import RelayProcess, create_room
from fedlab_kit.errors import InputTypeError
from fedlab_kit.maps.snapshot import BROWSER_CANDIDATES, BROWSER_ENV
from fedlab_kit.widgets import MapPanel, PassiveTrainingPanel, TrainingPanel

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.filterwarnings("ignore::fedlab_kit.boost.InsecurePlaintextWarning")]

BOUND = 300.0  # seconds: generous, only to fail instead of hanging


def finish(panel: Any) -> None:
    wait_for(lambda: not panel.busy, BOUND, f"{type(panel).__name__} to finish")


def data(n: int = 240, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    own = pd.DataFrame({"spend": rng.gamma(2, 50, n), "visits": rng.poisson(3, n) + 0.5})
    media = pd.DataFrame({"exposures": rng.poisson(5, n) + 0.5,
                          "screen_time": rng.normal(3, 1, n)})
    logit = own["spend"] / 50 - 2 + 0.5 * (media["exposures"] - 5.5) + rng.normal(0, 0.5, n)
    return own, media, (logit > 0).astype(int).to_numpy()


def stop_at(panel: TrainingPanel, trees: int) -> None:
    """Press Stop from the training thread as soon as ``trees`` trees are done."""
    def on_value(change: dict[str, Any]) -> None:
        if change["new"] == trees:
            panel.stop_button.click()

    panel.progress.observe(on_value, names="value")


# ------------------------------------------------------------- the trainer's Stop
@pytest.mark.parametrize("with_eval", [False, True])
def test_request_stop_keeps_the_trees_so_far_on_every_party(with_eval: bool) -> None:
    own, media, y = data()
    tr, va = slice(0, 180), slice(180, None)
    clf = SecureBoostClassifier(n_estimators=30, max_depth=2, insecure_plaintext=True)
    srv = SecureBoostPassive(insecure_plaintext=True)
    seen: list[int] = []

    def progress(tree: int, n_trees: int, metrics: dict[str, float]) -> None:
        seen.append(tree)
        if tree == 3:
            clf.request_stop()  # during the run: ends after this tree

    fit_local(clf, own[tr], y[tr], {"media": (srv, media[tr])},
              eval_set=[(own[va], y[va])] if with_eval else None,
              passive_eval={"media": [media[va]]} if with_eval else None, progress=progress)
    assert seen == [0, 1, 2, 3]
    assert len(clf.model.trees) == len(srv.model.trees) == 4
    if with_eval:
        assert len(clf.evals_result_["validation_0"]["logloss"]) == 4
    # both parts still make one model: a federated prediction round works
    margin = predict_local(clf, own[va], {"media": (srv, media[va])})
    assert margin.shape == (60,) and np.isfinite(margin).all()


def test_request_stop_before_fit_does_not_stop_the_next_fit() -> None:
    own, _, y = data(120)
    reg = SecureBoostRegressor(n_estimators=6, max_depth=2, insecure_plaintext=True)
    reg.request_stop()  # nothing runs: ignored
    reg.fit(own, y.astype(float), party=None, passive=[])
    assert len(reg.model.trees) == 6
    seen: list[int] = []

    def progress(tree: int, n_trees: int, metrics: dict[str, float]) -> None:
        seen.append(tree)
        if tree == 1:
            reg.request_stop()

    reg.fit(own, y.astype(float), party=None, passive=[], progress=progress)
    assert len(reg.model.trees) == 2 and seen == [0, 1]


# ------------------------------------------------------------ TrainingPanel alone
def test_training_panel_trains_alone_with_an_eval_set() -> None:
    own, _, y = data()
    evals = [(own[180:], y[180:])]
    panel = TrainingPanel(None, own[:180], y[:180], eval_set=evals, passive=[],
                          insecure_plaintext=True, n_estimators=5, max_depth=3)
    assert panel.task.value == "classification"
    assert panel.partners.value == "" and panel.stop_button.disabled
    assert "UNENCRYPTED" in panel.security_note.value
    panel.train_button.click()
    finish(panel)
    assert panel.error is None, panel.status.value
    assert panel.model is not None and len(panel.model.model.trees) == 5
    assert panel.progress.value == panel.progress.max == 5
    assert panel.progress.bar_style == "success"
    line = panel.progress_label.value
    assert line.startswith("tree 5/5") and "validation_0-logloss" in line
    assert [t for t, _ in panel.history] == [0, 1, 2, 3, 4]
    last = panel.model.evals_result_["validation_0"]["logloss"][-1]
    assert f"{last:.4g}" in line
    # the live curve (a custom widget) got every tree of the eval set
    assert panel.curve.metric == "logloss" and panel.curve.n_trees == 5
    assert panel.curve.history["validation_0"] == pytest.approx(
        panel.model.evals_result_["validation_0"]["logloss"])
    assert "kept 5 of 5 trees" in panel.status.value and "fedlab-ok" in panel.status.value
    result = panel.result_html.value
    assert "Trees kept</th><td>5 (built 5 of 5)" in result
    assert "Best iteration" in result and "validation_0-logloss" in result
    top = panel.model.feature_names_[int(np.argmax(panel.model.feature_importances_))]
    assert top in result.split("Top features")[1]
    assert not panel.train_button.disabled and panel.stop_button.disabled
    # the panel trained exactly what the estimator trains with the same hyperparameters
    direct = SecureBoostClassifier(n_estimators=5, max_depth=3, insecure_plaintext=True)
    direct.fit(own[:180], y[:180], party=None, passive=[])
    np.testing.assert_allclose(panel.model.predict_margin(own[180:], party=None),
                               direct.predict_margin(own[180:], party=None))


def test_training_panel_stop_keeps_the_trees_so_far() -> None:
    own, _, y = data()
    panel = TrainingPanel(None, own, y, insecure_plaintext=True, n_estimators=40, max_depth=2)
    assert panel.stop_button.disabled
    panel.stop_button.click()  # nothing running
    assert "No training is running" in panel.status.value
    stop_at(panel, 3)
    panel.train_button.click()
    finish(panel)
    assert panel.error is None, panel.status.value
    assert panel.stopped
    assert len(panel.model.model.trees) == 3 and len(panel.history) == 3
    assert "Stopped by you after tree 3: kept 3 of 40 trees" in panel.status.value
    assert "3 (built 3 of 40)" in panel.result_html.value
    assert panel.stop_button.disabled and not panel.train_button.disabled
    # a second run without Stop trains every tree again
    panel.n_estimators.value = 4
    panel.progress.unobserve_all()
    panel.train_button.click()
    finish(panel)
    assert not panel.stopped and len(panel.model.model.trees) == 4


@pytest.mark.parametrize(("name", "value", "message"), [
    ("max_depth", 0, "max_depth must be in 1..20, got 0"),
    ("subsample", 1.5, "subsample must be in (0, 1], got 1.5"),
    ("learning_rate", 0.0, "learning_rate must be > 0"),
    ("n_estimators", 0, "n_estimators must be >= 1"),
    ("max_bin", 300, "max_bin must be in 2..255"),
    ("min_child_rows", 0, "min_child_rows must be >= 1"),
])
def test_training_panel_bad_hyperparameters_are_shown(name: str, value: Any,
                                                      message: str) -> None:
    own, _, y = data(60)
    panel = TrainingPanel(None, own, y, insecure_plaintext=True, n_estimators=3)
    panel.hyper[name].value = value
    panel.train_button.click()
    assert not panel.busy and panel.model is None
    assert "Cannot train" in panel.status.value and "fedlab-error" in panel.status.value
    assert message in panel.status.value.replace("&gt;", ">")
    assert "Traceback" not in panel.status.value


def test_training_panel_input_problems_are_readable() -> None:
    own, _, y = data(60)
    panel = TrainingPanel(None, own, y, insecure_plaintext=True, n_estimators=2)
    panel.partners.value = "media"
    panel.train_button.click()
    assert "needs a connected party" in panel.status.value and not panel.busy
    panel.partners.value = ""
    panel.early_stopping.value = 2
    panel.train_button.click()
    assert "early stopping needs an eval_set" in panel.status.value
    panel.early_stopping.value = 0
    with pytest.raises(TypeError, match="unknown hyperparameters"):
        TrainingPanel(None, own, y, n_trees=3)
    # a failure inside the run (labels that are not 0/1) is shown, not raised
    bad = TrainingPanel(None, own, np.r_[y[:-1], 7], task="classification",
                        insecure_plaintext=True, n_estimators=2)
    bad.train_button.click()
    finish(bad)
    assert bad.error is not None and bad.model is None
    assert "Training failed" in bad.status.value and "binary labels" in bad.status.value
    assert bad.progress.bar_style == "danger" and not bad.train_button.disabled


def test_training_panel_regression_and_early_stopping() -> None:
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"a": rng.integers(0, 10, 300).astype(float), "b": rng.normal(size=300)})
    y = X["a"] * 0.3 + rng.normal(0, 1.0, 300)
    panel = TrainingPanel(None, X[:220], y[:220], eval_set=[(X[220:], y[220:])],
                          insecure_plaintext=True, n_estimators=80, max_depth=3,
                          learning_rate=0.5, early_stopping_rounds=2)
    assert panel.task.value == "regression"
    assert [v for _, v in panel.eval_metric.options] == ["default", "rmse", "mae", "p30"]
    assert panel.eval_metric.value == "default"  # a real option: never shown blank
    assert panel.hyperparameters()["eval_metric"] is None
    panel.eval_metric.value = "mae"
    panel.train_button.click()
    finish(panel)
    assert panel.error is None, panel.status.value
    model = panel.model
    assert isinstance(model, SecureBoostRegressor)
    history = model.evals_result_["validation_0"]["mae"]
    assert len(history) == len(panel.history) < 80  # early stopping ended the run
    assert len(model.model.trees) == model.best_iteration + 1
    assert "Early stopping" in panel.status.value and not panel.stopped
    assert f"Best iteration</th><td>{model.best_iteration} (validation_0-mae" in \
        panel.result_html.value
    panel.task.value = "classification"
    assert [v for _, v in panel.eval_metric.options] == ["default", "logloss", "auc", "error"]


# ----------------------------------------------------------- two parties, relay
# the module's relay process is the `relay` fixture of conftest.py
@pytest.fixture
def pair(relay: RelayProcess, tmp_path: Path) -> Iterator[tuple[Party, Party]]:
    inv, keys = create_room([ACTIVE, "media"], tmp_path, relay.host, relay.port,
                            room=f"t-{uuid.uuid4().hex[:8]}")
    opened: list[Party] = []
    try:
        for name in (ACTIVE, "media"):
            opened.append(Party(Identity.load(keys[name]), inv))
        yield opened[0], opened[1]
    finally:
        for party in reversed(opened):
            with contextlib.suppress(Exception):
                party.close(flush_timeout=2)


def test_two_parties_train_encrypted_from_the_panels(pair: tuple[Party, Party]) -> None:
    me, peer = pair
    own, media, y = data(150)
    panel = TrainingPanel(me, own, y, n_estimators=2, max_depth=2, max_bin=8, timeout=BOUND)
    assert panel.partners.value == "media"  # every peer by default
    assert panel.security_note.value == ""
    serve = PassiveTrainingPanel(peer, media, timeout=BOUND)
    assert serve.active.value == ACTIVE  # the only peer
    serve.serve_button.click()
    assert serve.busy and "waiting" in serve.status.value
    panel.train_button.click()
    finish(panel)
    finish(serve)
    assert panel.error is None and serve.error is None, (panel.status.value,
                                                         serve.status.value)
    assert panel.model.model.passives == {"media": ["exposures", "screen_time"]}
    assert len(panel.model.model.trees) == len(serve.model.model.trees) == 2
    assert "2 trees kept" in serve.status.value
    assert "Trees kept</th><td>2" in serve.result_html.value
    assert serve.progress_label.value.startswith("tree 2 done")  # live progress, last tree
    assert "retailer, media" in panel.result_html.value
    splits = sum(1 for t in panel.model.model.trees for n in t
                 if not n.is_leaf and n.owner == "media")
    assert len(serve.model.model.records) == splits


def test_two_parties_stop_keeps_the_same_trees(pair: tuple[Party, Party]) -> None:
    me, peer = pair
    own, media, y = data(150)
    panel = TrainingPanel(me, own, y, passive=["media"], insecure_plaintext=True,
                          n_estimators=1000, max_depth=2, timeout=BOUND)
    serve = PassiveTrainingPanel(peer, media, active=ACTIVE, insecure_plaintext=True,
                                 timeout=BOUND)
    serve.serve_button.click()
    panel.train_button.click()
    wait_for(lambda: panel.progress.value >= 2, BOUND, "two trees")
    panel.stop_button.click()  # from this thread, while trees are being built
    assert panel.stop_button.disabled and "Stopping" in panel.status.value
    finish(panel)
    finish(serve)
    assert panel.error is None and serve.error is None, (panel.status.value,
                                                         serve.status.value)
    kept = len(panel.model.model.trees)
    assert panel.stopped and 2 <= kept == len(panel.history) < 1000
    assert len(serve.model.model.trees) == kept
    assert f"{kept} trees kept" in serve.status.value


def test_two_parties_train_logistic_regression_encrypted_from_the_panels(
        pair: tuple[Party, Party]) -> None:
    """The Model choice: the same panels train vertical logistic regression; the label
    holder sees its own coefficients, the feature holder its own."""
    me, peer = pair
    own, media, y = data(300)
    panel = TrainingPanel(me, own, y, model="logistic", max_iter=20, timeout=BOUND)
    assert "Logistic regression training (label holder)" in panel.title.value
    assert panel.boost_box.layout.display == "none" and panel.lr_box.layout.display == ""
    serve = PassiveTrainingPanel(peer, media, timeout=BOUND)
    serve.model_choice.value = "logistic"  # chosen in the dropdown, as a person would
    assert "Logistic regression training (feature holder)" in serve.title.value
    serve.serve_button.click()
    panel.train_button.click()
    finish(panel)
    finish(serve)
    assert panel.error is None and serve.error is None, (panel.status.value,
                                                         serve.status.value)
    n = panel.model.n_iter_
    assert 2 <= n == serve.model.model.n_iter <= 20 and "iterations" in panel.status.value
    assert "spend" in panel.result_html.value and "exposures" not in panel.result_html.value
    assert "exposures" in serve.result_html.value and "spend" not in serve.result_html.value
    assert panel.progress_label.value.startswith(f"iteration {n}/20")
    assert len(panel.history) == n + 1  # iteration 0 (the gradient at zero) and each step
    assert serve.model.coef_.shape == (2,)


def test_training_panel_rejects_an_unknown_model() -> None:
    own, _, y = data(40)
    with pytest.raises(InputTypeError, match="model must be"):
        TrainingPanel(None, own, y, model="forest")


def test_passive_panel_input_errors(pair: tuple[Party, Party]) -> None:
    _, peer = pair
    _, media, _ = data(30)
    serve = PassiveTrainingPanel(peer, media, active="nobody")
    serve.serve_button.click()
    assert "'nobody' is not in this room" in serve.status.value.replace("&#x27;", "'")
    assert not serve.busy
    alone = PassiveTrainingPanel(None, media, active=ACTIVE)
    alone.serve_button.click()
    assert "needs a connected party" in alone.status.value


# ------------------------------------------------------------------------ MapPanel
# districts and web_assets come from conftest.py (shared with test_maps)
@pytest.fixture(scope="module")
def cells() -> pd.DataFrame:
    return crowd_cells([SHOWN_COUNT, 1200, 640, 300, HIDDEN_COUNT])


@pytest.fixture(scope="module")
def funnel() -> pd.DataFrame:
    return district_funnel(["reach", "visit", "purchase"])


def test_map_panel_layer_toggling_changes_the_map(cells: pd.DataFrame, funnel: pd.DataFrame,
                                                  districts: gpd.GeoDataFrame) -> None:
    panel = MapPanel(cells=cells, funnel=funnel, districts=districts,
                     shown=["Crowd counts", "Districts"])
    assert list(panel.layer_boxes) == ["Crowd counts", "Crowd heat", "Campaign funnel",
                                       "Districts"]
    assert panel.selected == ["Crowd counts", "Districts"]
    view = panel.map_view.value
    assert view.startswith('<iframe class="fedlab-map"')
    assert "Crowd counts (DP)" in view and "4,321" in view
    assert "987,654" not in view and "987654" not in view  # suppressed: never on the map
    assert "Campaign funnel (DP)" not in view and "Crowd heat (DP)" not in view
    first = panel.map
    panel.layer_boxes["Crowd counts"].value = False
    panel.layer_boxes["Campaign funnel"].value = True
    view = panel.map_view.value
    assert panel.map is not first
    assert "Crowd counts (DP)" not in view and "4,321" not in view
    assert "Campaign funnel (DP)" in view and "Districts" in view
    for box in panel.layer_boxes.values():
        box.value = False
    assert "No layer ticked" in panel.layer_status.value
    view = panel.map_view.value
    assert "Crowd counts (DP)" not in view and "fedlab-district-label" not in view
    assert panel._repr_mimebundle_() is not None  # displays as its widget
    # by default one data layer and the outlines: layers do not pile up in an export
    assert MapPanel(cells=cells, funnel=funnel, districts=districts).selected == [
        "Crowd counts", "Districts"]
    only_funnel = MapPanel(funnel=funnel.assign(lift=0.1), districts=districts)
    assert only_funnel.selected == ["Campaign funnel", "Districts"]
    assert "Lift at stage" in only_funnel.map_view.value  # shaded, with its legend


def test_map_panel_basemap_is_ticked_and_drawn_first(cells: pd.DataFrame,
                                                     districts: gpd.GeoDataFrame) -> None:
    from fedlab_kit.data import load_basemap

    panel = MapPanel(cells=cells, districts=districts, basemap=load_basemap())
    assert panel.selected == ["Basemap", "Crowd counts", "Districts"]
    assert '&quot;class&quot;: &quot;river&quot;' in panel.map_view.value
    names = [getattr(c, "layer_name", None) for c in panel.map._children.values()]
    assert names.index("Basemap") < names.index("Crowd counts (DP)")
    panel.layer_boxes["Basemap"].value = False
    assert "river" not in panel.map_view.value
    with pytest.raises(InputTypeError, match="something to draw"):
        MapPanel(basemap=load_basemap())  # a backdrop alone is not a map of results


def test_map_panel_exports_html_and_png(tmp_path: Path, web_assets: Path,
                                        cells: pd.DataFrame,
                                        districts: gpd.GeoDataFrame) -> None:
    panel = MapPanel(cells=cells, districts=districts, path=tmp_path / "out" / "crowd.png")
    panel.html_button.click()  # the HTML button writes .html whatever the box says
    finish(panel)
    target = tmp_path / "out" / "crowd.html"
    assert panel.error is None, panel.status.value
    assert panel.exported == target.resolve() and target.is_file()
    text = target.read_text(encoding="utf-8")
    assert "Crowd counts (DP)" in text and "4,321" in text and "987,654" not in text
    assert "cdn.jsdelivr.net" not in text  # offline: assets inlined
    assert str(target.resolve()) in panel.status.value and "fedlab-ok" in panel.status.value

    panel.png_button.click()
    finish(panel)
    png = tmp_path / "out" / "crowd.png"
    if os.environ.get(BROWSER_ENV) or any(shutil.which(b) for b in BROWSER_CANDIDATES):
        assert panel.error is None, panel.status.value
        assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert f"Wrote {png.resolve()}" in panel.status.value
    else:  # no Chromium here: the panel says what to install
        assert panel.error is not None and "Chromium" in panel.status.value
        assert not png.exists()
    assert not panel.html_button.disabled and not panel.png_button.disabled


def test_map_panel_export_errors_are_shown(tmp_path: Path, web_assets: Path,
                                           cells: pd.DataFrame,
                                           districts: gpd.GeoDataFrame) -> None:
    panel = MapPanel(cells=cells, districts=districts, path=tmp_path / "map.html",
                     browser=str(tmp_path / "no-such-chromium"))
    panel.png_button.click()
    finish(panel)
    assert panel.error is not None and panel.exported is None
    assert "PNG export failed" in panel.status.value and "was not found" in panel.status.value
    assert "Traceback" not in panel.status.value
    assert not (tmp_path / "map.png").exists()
    panel.path.value = "  "
    assert panel.export(".html") is False
    assert "enter the file to write" in panel.status.value
    panel.path.value = str(tmp_path)
    panel.html_button.click()
    assert "is a folder" in panel.status.value and not panel.busy
    panel.path.value = str(tmp_path / "m.html")
    for box in panel.layer_boxes.values():
        box.value = False
    panel.html_button.click()
    assert "no layer ticked" in panel.status.value and not (tmp_path / "m.html").exists()


def test_map_panel_refuses_person_level_frames_and_takes_custom_layers(
        tmp_path: Path, web_assets: Path, cells: pd.DataFrame,
        districts: gpd.GeoDataFrame) -> None:
    rows = cells.assign(user_id=range(len(cells)))

    def marker(m: folium.Map) -> None:
        folium.Marker([31.23, 121.47], tooltip="Head office").add_to(m)

    panel = MapPanel(cells=rows, districts=districts, layers={"Office": marker},
                     path=tmp_path / "m.html")
    assert "Layer &#x27;Crowd counts&#x27; cannot be drawn" in panel.layer_status.value \
        or "Layer 'Crowd counts' cannot be drawn" in panel.layer_status.value
    assert "user_id" in panel.layer_status.value and "person" in panel.layer_status.value
    assert set(panel.layer_errors) == {"Crowd counts"}  # the heat map is not ticked at first
    assert panel.selected == ["Crowd counts", "Districts", "Office"]
    assert "Head office" in panel.map_view.value  # the other layers are still drawn
    panel.html_button.click()  # exporting a refused layer fails in the panel
    finish(panel)
    assert "HTML export failed" in panel.status.value and "user_id" in panel.status.value
    assert not (tmp_path / "m.html").exists()
    panel.layer_boxes["Crowd counts"].value = False
    panel.layer_boxes["Crowd heat"].value = False
    assert panel.layer_status.value == ""
    panel.html_button.click()
    finish(panel)
    assert panel.error is None, panel.status.value
    assert "Head office" in (tmp_path / "m.html").read_text(encoding="utf-8")
    with pytest.raises(TypeError, match="needs something to draw"):
        MapPanel()
    with pytest.raises(ValueError, match="unknown layers"):
        MapPanel(districts=districts, shown=["Crowd counts"])


def test_a_multiclass_result_counts_rounds_not_trees() -> None:
    from sklearn.datasets import load_wine

    from fedlab_kit.widgets.training import result_html
    X, y = load_wine(return_X_y=True)
    clf = SecureBoostClassifier(n_estimators=2, max_depth=2, max_bin=16)
    clf.fit(X, y, party=None, passive=[])
    assert len(clf.model.trees) == 6  # 2 rounds x 3 classes
    assert "2 rounds x 3 classes (built 2 of 2)" in result_html(clf, 2, 1.0)
