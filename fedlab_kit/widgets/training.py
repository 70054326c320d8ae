"""TrainingPanel / PassiveTrainingPanel: joint training from a button, in the background.

The model is a choice (``model="secureboost"`` or ``"logistic"``, or the Model dropdown):
SecureBoost trees or vertical logistic regression.

The label holder uses :class:`TrainingPanel` (hyperparameters, partners, Train / Stop, a live
per-tree line and the result); each feature holder serves the same run with
:class:`PassiveTrainingPanel` (or :meth:`SecureBoostPassive.fit
<fedlab_kit.boost.SecureBoostPassive.fit>`) at the same time, with the same ``session``.
"""

from __future__ import annotations

import html
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np

from ..boost import (
    SecureBoostClassifier,
    SecureBoostPassive,
    SecureBoostRegressor,
)
from ..boost.params import LOGISTIC, MAXIMIZE, METRICS, SQUARED
from ..errors import FedlabError, InputError, InputTypeError
from ..linear import SecureLogisticPassive, SecureLogisticRegression
from ..net.session import Party
from ._background import Background, TaskPanel, box_html, error_html, full_width

log = logging.getLogger("fedlab.widgets")

CLASSIFICATION, REGRESSION = "classification", "regression"
_OBJECTIVES = {CLASSIFICATION: LOGISTIC, REGRESSION: SQUARED}
_ESTIMATORS = {CLASSIFICATION: SecureBoostClassifier, REGRESSION: SecureBoostRegressor}
# hyperparameter -> (widget class, default, description, tooltip). Fewer and shallower trees
# than XGBoost's defaults: every tree costs encrypted rounds with every partner.
_HYPER: dict[str, tuple[type, Any, str, str]] = {
    "n_estimators": (widgets.IntText, 50, "Trees", "number of boosting rounds (>= 1)"),
    "max_depth": (widgets.IntText, 4, "Max depth", "depth of each tree (1..20)"),
    "learning_rate": (widgets.FloatText, 0.3, "Learning rate", "shrinkage per tree (> 0)"),
    "max_bin": (widgets.IntText, 32, "Max bins", "histogram bins per feature (2..255)"),
    "min_child_weight": (widgets.FloatText, 1.0, "Min child wt",
                         "minimum hessian sum in a leaf (>= 0)"),
    "min_child_rows": (widgets.IntText, 20, "Min rows",
                       "privacy floor: no node or leaf of fewer rows (>= 1); the feature "
                       "holders' own floors apply too"),
    "reg_lambda": (widgets.FloatText, 1.0, "L2 (lambda)", "L2 regularisation of leaves (>= 0)"),
    "subsample": (widgets.FloatText, 1.0, "Subsample", "rows sampled per tree, in (0, 1]"),
    "colsample_bytree": (widgets.FloatText, 1.0, "Col. sample",
                         "columns sampled per tree, in (0, 1]"),
}
SECUREBOOST, LOGISTIC_REGRESSION = "secureboost", "logistic"
_MODELS = [("SecureBoost (trees)", SECUREBOOST), ("Logistic regression (linear)",
                                                  LOGISTIC_REGRESSION)]
_TITLES = {SECUREBOOST: "SecureBoost training", LOGISTIC_REGRESSION:
           "Logistic regression training"}
# logistic regression's hyperparameters -> (widget class, default, description, tooltip)
_LR_HYPER: dict[str, tuple[type, Any, str, str]] = {
    "C": (widgets.FloatText, 1.0, "C (inverse L2)",
          "inverse L2 strength, as scikit-learn's LogisticRegression (> 0)"),
    "max_iter": (widgets.IntText, 100, "Max iter", "most conjugate-gradient iterations"),
    "tol": (widgets.FloatText, 1e-4, "Tolerance",
            "stop when the gradient norm is below this share of its start, in [0, 1)"),
}
DEFAULT_METRIC = "default"  # the eval-metric option meaning "the objective's default"
_FIXED = ("gamma", "random_state", "base_score")  # passed through to the estimator
_TOP_FEATURES = 8
_STYLE = {"description_width": "110px"}


def _resolve_party(source: Any, what: str) -> Party | None:
    """A Party, or the party of a ConnectPanel-like object (``None`` if not connected)."""
    if source is None or isinstance(source, Party):
        return source
    party = getattr(source, "party", source)
    if party is None:
        raise FedlabError(f"not connected: connect to the room first ({what})")
    return party


def _known_peers(source: Any) -> list[str]:
    """The peers of the room ``source`` is connected to (none if it is not connected yet)."""
    try:
        party = _resolve_party(source, "peers")
    except FedlabError:
        return []
    return [] if party is None else list(party.peers)


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.replace(";", ",").split(",")]
    return [n for n in names if n]


def _fmt(value: float) -> str:
    return "nan" if not math.isfinite(value) else f"{value:.4g}"


def _table(rows: Sequence[tuple[str, str]], css: str) -> str:
    body = "".join(f'<tr><th style="text-align:left;padding-right:1em;white-space:nowrap;'
                   f'vertical-align:top">{html.escape(k)}</th>'
                   f"<td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="{css}">{body}</table>'


class TrainingPanel(TaskPanel):
    """The label holder's SecureBoost training: hyperparameters, partners, Train / Stop.

    ``party`` is a connected :class:`~fedlab_kit.net.session.Party`, a
    :class:`~fedlab_kit.widgets.ConnectPanel` (its party is used at Train time), or ``None``
    to train alone on ``X_own`` (then leave the partners empty). ``passive`` names the
    feature holders; when the Partners box is empty at Train time every peer of the party
    takes part. Every partner must serve the run at the same time with the same
    ``session`` (:class:`PassiveTrainingPanel` or ``SecureBoostPassive.fit``), and with
    ``eval_set`` their own columns of the same evaluation rows.

    ``task`` is ``"classification"`` (labels 0/1) or ``"regression"``; by default it is
    guessed from ``y``. Hyperparameters given as keyword arguments set the widgets'
    starting values (``n_estimators=10``); ``gamma``, ``random_state`` and ``base_score``
    go to the estimator unchanged.

    Stop ends training after the tree being built and keeps the trees so far (the
    partners keep the same trees). After a run, ``panel.model`` is the fitted
    :class:`~fedlab_kit.boost.SecureBoostClassifier` (or regressor), ready for
    ``predict_proba(X, party=...)``; ``panel.history`` holds ``(tree, metrics)`` per tree.
    """

    def __init__(self, party: Any, X_own: Any, y: Any, *,
                 eval_set: Sequence[tuple[Any, Any]] | None = None,
                 passive: Sequence[str] | None = None, insecure_plaintext: bool = False,
                 task: str | None = None, early_stopping_rounds: int | None = None,
                 session: str = "boost", timeout: float | None = None,
                 model: str = SECUREBOOST, **hyperparameters: Any) -> None:
        if model not in _TITLES:
            raise InputTypeError(f"model must be {SECUREBOOST!r} or {LOGISTIC_REGRESSION!r}, "
                                 f"got {model!r}")
        unknown = sorted(set(hyperparameters) - set(_HYPER) - set(_FIXED) - set(_LR_HYPER))
        if unknown:
            raise InputTypeError(f"TrainingPanel got unknown hyperparameters {unknown}; known: "
                                 f"{sorted([*_HYPER, *_FIXED, *_LR_HYPER])}")
        if isinstance(passive, str):
            raise InputTypeError("passive must be a list of party names, not a string")
        if insecure_plaintext not in (True, False):
            raise InputTypeError(f"insecure_plaintext must be True or False, got "
                                 f"{insecure_plaintext!r}")
        self.party_source = party
        self.X_own, self.y = X_own, y
        self.eval_set = list(eval_set) if eval_set is not None else None
        self.insecure_plaintext = insecure_plaintext
        self.session, self.timeout = session, timeout
        self.fixed = {k: v for k, v in hyperparameters.items() if k in _FIXED}
        self.model: Any = None  # the fitted estimator
        self.estimator: Any = None
        self.history: list[tuple[int, dict[str, float]]] = []
        self.stopped = False  # the last run ended by the Stop button
        self._stop_requested = False
        self._started = 0.0

        if task is None:
            task = self._guess_task(y)
        if task not in _OBJECTIVES:
            raise InputError(f"task must be {CLASSIFICATION!r} or {REGRESSION!r}, got {task!r}")
        self.task = widgets.Dropdown(
            options=[("classification (labels 0/1)", CLASSIFICATION),
                     ("regression", REGRESSION)],
            value=task, description="Task", style=_STYLE)
        self.hyper: dict[str, widgets.ValueWidget] = {}
        for name, (cls, default, label, tip) in _HYPER.items():
            self.hyper[name] = cls(value=hyperparameters.get(name, default), description=label,
                                   tooltip=tip, style=_STYLE,
                                   layout=widgets.Layout(width="220px"))
        for name, w in self.hyper.items():
            setattr(self, name, w)  # panel.max_depth.value = 3
        self.lr_hyper: dict[str, widgets.ValueWidget] = {
            name: cls(value=hyperparameters.get(name, default), description=label,
                      tooltip=tip, style=_STYLE, layout=widgets.Layout(width="220px"))
            for name, (cls, default, label, tip) in _LR_HYPER.items()}
        self.model_choice = widgets.Dropdown(options=_MODELS, value=model, description="Model",
                                             style=_STYLE)
        self.eval_metric = widgets.Dropdown(description="Eval metric", style=_STYLE)
        self._metric_options()
        self.task.observe(lambda _: self._metric_options(), names="value")
        self.early_stopping = widgets.IntText(
            value=early_stopping_rounds or 0, description="Early stop",
            tooltip="stop when the eval metric has not improved for this many "
                                "trees (0 = off; needs an eval_set)",
            disabled=self.eval_set is None, style=_STYLE, layout=widgets.Layout(width="220px"))
        if passive is None:
            passive = _known_peers(party)
        self.partners = widgets.Text(
            value=", ".join(passive), description="Partners", style=_STYLE,
            placeholder="feature holders, e.g. media, operator (empty: every peer)",
            layout=full_width())
        self.train_button = widgets.Button(description="Train", button_style="primary",
                                           icon="play")
        self.stop_button = widgets.Button(description="Stop", icon="stop", disabled=True,
                                          tooltip="end after the current tree, keep the trees")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="Trees")
        self.progress_label = widgets.HTML("")
        self.security_note = widgets.HTML(
            box_html("insecure_plaintext=True: gradients and histograms (or, for logistic "
                     "regression, contributions and inner products) travel UNENCRYPTED to "
                     "the partners. For tests and benchmarks only.", "warning")
            if insecure_plaintext else "")
        self.status = widgets.HTML("")
        self.result_html = widgets.HTML("")
        self._task = Background(self.status, name="fedlab-boost-train")
        self.train_button.on_click(self._on_train)
        self.stop_button.on_click(self._on_stop)
        columns = widgets.Layout(grid_template_columns="repeat(2, 240px)")
        self.boost_box = widgets.VBox([
            self.task, widgets.GridBox(list(self.hyper.values()), layout=columns),
            widgets.HBox([self.eval_metric, self.early_stopping])])
        self.lr_box = widgets.VBox([
            widgets.GridBox(list(self.lr_hyper.values()), layout=columns),
            widgets.HTML("<small>Labels 0/1. Each party standardises its own columns and "
                         "keeps its own coefficients; the sigmoid is linearised (see the "
                         "README).</small>")])
        from .charts import TrainingCurve

        self.curve = TrainingCurve()  # the metric per tree, live (a custom widget)
        self.title = widgets.HTML("")
        self.widget = widgets.VBox([
            self.title, self.security_note, self.model_choice, self.boost_box, self.lr_box,
            self.partners, widgets.HBox([self.train_button, self.stop_button]),
            widgets.HBox([self.progress, self.progress_label]), self.curve, self.status,
            self.result_html,
        ])
        self.model_choice.observe(lambda _: self._model_changed(), names="value")
        self._model_changed()

    # ------------------------------------------------------------------ state

    @property
    def logistic(self) -> bool:
        """Logistic regression is the chosen model."""
        return bool(self.model_choice.value == LOGISTIC_REGRESSION)

    def _model_changed(self) -> None:
        self.title.value = f"<b>{_TITLES[self.model_choice.value]} (label holder)</b>"
        self.boost_box.layout.display = "none" if self.logistic else ""
        self.lr_box.layout.display = "" if self.logistic else "none"
        self.curve.layout.display = "none" if self.logistic else ""
        self.progress.description = "Iterations" if self.logistic else "Trees"
        self.stop_button.tooltip = ("end after the current iteration, keep the weights"
                                    if self.logistic else
                                    "end after the current tree, keep the trees")

    def hyperparameters(self) -> dict[str, Any]:
        """The estimator's keyword arguments as the widgets (and fixed options) say."""
        if self.logistic:
            return {name: w.value for name, w in self.lr_hyper.items()}
        params: dict[str, Any] = {name: w.value for name, w in self.hyper.items()}
        metric = self.eval_metric.value
        params["eval_metric"] = None if metric == DEFAULT_METRIC else metric
        return {**params, **self.fixed}

    @staticmethod
    def _guess_task(y: Any) -> str:
        try:
            values = np.unique(np.asarray(y, dtype=np.float64))
        except (TypeError, ValueError):
            return CLASSIFICATION  # fit() reports the labels' problem
        return CLASSIFICATION if set(values.tolist()) <= {0.0, 1.0} else REGRESSION

    def _metric_options(self) -> None:
        metrics = METRICS[_OBJECTIVES[self.task.value]]
        # not None: ipywidgets 8 shows an option whose value is None as blank
        self.eval_metric.options = [(f"default ({metrics[0]})", DEFAULT_METRIC),
                                    *((m, m) for m in metrics)]
        self.eval_metric.value = DEFAULT_METRIC

    # -------------------------------------------------------------------- run
    def _inputs(self) -> tuple[Any, Party | None, list[str], int | None]:
        params = self.hyperparameters()
        if self.logistic:
            estimator: Any = SecureLogisticRegression(
                **params, insecure_plaintext=self.insecure_plaintext)
        else:
            estimator = _ESTIMATORS[self.task.value](
                **params, insecure_plaintext=self.insecure_plaintext)
        estimator.params  # checks the hyperparameters before anything is sent  # noqa: B018
        party = _resolve_party(self.party_source, "or pass party=None to train alone")
        partners = _names(self.partners.value)
        if len(set(partners)) != len(partners):
            raise FedlabError(f"a partner is named twice: {partners}")
        if party is None:
            if partners:
                raise FedlabError(f"training with {', '.join(partners)} needs a connected "
                                  "party (party=None trains alone: leave Partners empty)")
        else:
            if not partners:
                partners = list(party.peers)
                if not partners:
                    raise FedlabError("nobody else is in the room; name the partners")
                self.partners.value = ", ".join(partners)
            unknown = [p for p in partners if p not in party.peers]
            if unknown:
                raise FedlabError(f"{', '.join(map(repr, unknown))} not in this room "
                                  f"(peers: {', '.join(party.peers) or 'none'})")
        if self.logistic:
            return estimator, party, partners, None
        rounds = self.early_stopping.value
        if rounds < 0:
            raise FedlabError(f"early stopping rounds must be >= 0 (0 = off), got {rounds}")
        if rounds and self.eval_set is None:
            raise FedlabError("early stopping needs an eval_set (give one to the panel)")
        return estimator, party, partners, rounds or None

    def _on_train(self, _: Any = None) -> None:
        if self._task.busy:
            self.status.value = box_html("Training is already running: wait for it, or press "
                                         "Stop.", "warning", "Train refused")
            return
        try:
            estimator, party, partners, rounds = self._inputs()
        except (FedlabError, ValueError, TypeError) as exc:
            self.status.value = error_html("Cannot train", exc)
            return
        self.estimator, self.model, self.history = estimator, None, []
        self.stopped, self._stop_requested = False, False
        n = estimator.params.max_iter if self.logistic else estimator.params.n_estimators
        what = (f"logistic regression (up to {n} iterations)" if self.logistic
                else f"{n} trees")
        self.progress.max, self.progress.value, self.progress.bar_style = n, 0, "info"
        self.result_html.value = ""
        self.curve.reset(n)
        if partners:
            self.progress_label.value = html.escape(f"waiting for {', '.join(partners)}…")
            text = (f"Training {what} with {', '.join(partners)} (session "
                    f"{self.session!r}); each of them must serve this run now.")
        else:
            self.progress_label.value = "starting…"
            text = f"Training {what} on your own columns only."
        self.status.value = box_html(text, "info")
        self.train_button.disabled, self.stop_button.disabled = True, False
        self._started = time.monotonic()
        self._task.start(self._fit, estimator, party, partners, rounds, title="Training failed",
                         on_success=self._show_result, on_done=self._finished)

    def _fit(self, estimator: Any, party: Party | None, partners: list[str],
             rounds: int | None) -> Any:
        if self.logistic:
            return estimator.fit(self.X_own, self.y, party=party, passive=partners,
                                 session=self.session, progress=self._on_iteration,
                                 timeout=self.timeout)
        return estimator.fit(self.X_own, self.y, party=party, passive=partners,
                             eval_set=self.eval_set, early_stopping_rounds=rounds,
                             session=self.session, progress=self._on_tree,
                             timeout=self.timeout)

    def _on_tree(self, tree: int, n_trees: int, metrics: dict[str, float]) -> None:
        """After every tree (in the protocol's thread): the live line, and Stop."""
        try:
            self.history.append((tree, dict(metrics)))
            parts = [f"tree {tree + 1}/{n_trees}"]
            shown = sorted(metrics, key=lambda k: (k.startswith("train-"), k))
            parts += [f"{k} {_fmt(metrics[k])}" for k in shown]
            self.progress_label.value = html.escape(" · ".join(parts))
            self.progress.value = min(tree + 1, self.progress.max)
            self.curve.add(metrics)
        except Exception:  # a display problem must not break the protocol
            log.debug("training progress display failed", exc_info=True)
        if self._stop_requested and self.estimator is not None:
            self.estimator.request_stop()

    def _on_iteration(self, k: int, max_iter: int, norm: float) -> None:
        """After every logistic-regression iteration (in the protocol's thread)."""
        try:
            self.history.append((k, {"gradient_norm": norm}))
            self.progress_label.value = html.escape(
                f"iteration {k}/{max_iter} · gradient norm {_fmt(norm)}")
            self.progress.value = min(k, self.progress.max)
        except Exception:  # a display problem must not break the protocol
            log.debug("training progress display failed", exc_info=True)
        if self._stop_requested and self.estimator is not None:
            self.estimator.request_stop()

    def _on_stop(self, _: Any = None) -> None:
        if not self._task.busy or self.estimator is None:
            self.status.value = box_html("No training is running.", "info")
            return
        self._stop_requested = True
        self.estimator.request_stop()
        self.stop_button.disabled = True
        self.status.value = box_html(
            "Stopping after the current iteration; the weights so far are kept."
            if self.logistic else
            "Stopping after the tree being built; the trees so far are kept.", "info")

    def _finished(self) -> None:
        self.train_button.disabled, self.stop_button.disabled = False, True
        failed = self._task.error is not None
        self.progress.bar_style = "danger" if failed else "success"
        if failed:
            self.progress_label.value = "failed"

    def _show_result(self, estimator: Any) -> None:
        self.model = estimator
        if isinstance(estimator, SecureLogisticRegression):
            self._show_logistic(estimator)
            return
        model = estimator.model
        kept, n = len(model.trees) // model.n_groups, estimator.params.n_estimators
        seconds = time.monotonic() - self._started
        self.stopped = self._stop_requested and len(self.history) < n
        if self.stopped:
            how, kind = f"Stopped by you after tree {len(self.history)}", "warning"
        elif model.best_iteration is not None and len(self.history) < n:
            how, kind = f"Early stopping after tree {len(self.history)}", "ok"
        else:
            how, kind = "Training finished", "ok"
        self.result_html.value = result_html(estimator, len(self.history), seconds)
        self.status.value = box_html(f"{how}: kept {kept} of {n} trees ({seconds:.1f} s). "
                                     "The model is in panel.model.", kind)


    def _show_logistic(self, estimator: SecureLogisticRegression) -> None:
        seconds = time.monotonic() - self._started
        n, max_iter = estimator.n_iter_, estimator.params.max_iter
        self.stopped = self._stop_requested and n < max_iter
        if self.stopped:
            how, kind = f"Stopped by you after iteration {n}", "warning"
        elif n < max_iter:
            how, kind = f"Converged after {n} iterations", "ok"
        else:
            how, kind = f"Reached max_iter ({n} iterations)", "ok"
        self.progress.value = self.progress.max
        self.result_html.value = logistic_html(estimator, seconds)
        self.status.value = box_html(f"{how} ({seconds:.1f} s). The model is in panel.model.",
                                     kind)


def _coefficients(model: Any) -> str:
    """The largest own coefficients, per standard deviation of the column."""
    pairs = sorted(zip(model.columns, model.weights.tolist(), strict=True),
                   key=lambda kv: -abs(kv[1]))
    text = ", ".join(f"{k} {v:+.3g}" for k, v in pairs[:_TOP_FEATURES]) or "none"
    if len(pairs) > _TOP_FEATURES:
        text += f" (+{len(pairs) - _TOP_FEATURES} more)"
    return text


def logistic_html(estimator: SecureLogisticRegression, seconds: float) -> str:
    """What a fitted label holder's logistic regression says: iterations, parties, its own
    largest coefficients."""
    model = estimator.model
    rows = [("Iterations", f"{model.n_iter} (max {estimator.params.max_iter})"),
            ("Parties", ", ".join(model.parties)),
            ("Your coefficients (per std)", _coefficients(model)),
            ("Partners' coefficients", "kept by each partner"),
            ("Time", f"{seconds:.1f} s")]
    return _table(rows, "fedlab-training-result")


def _best(estimator: Any) -> tuple[int, str, float] | None:
    """(iteration, metric name, score) of early stopping, else the best eval round."""
    model = estimator.model
    metric = estimator.params.metric
    if model.best_iteration is not None and model.best_score is not None:
        return model.best_iteration, f"validation_0-{metric}", float(model.best_score)
    history = model.evals_result.get("validation_0", {}).get(metric)
    if not history:
        return None
    values = np.asarray(history, dtype=np.float64)
    if np.isnan(values).all():
        return None
    i = int(np.nanargmax(values) if metric in MAXIMIZE else np.nanargmin(values))
    return i, f"validation_0-{metric}", float(values[i])


def result_html(estimator: Any, trained: int, seconds: float) -> str:
    """What a fitted active estimator says: trees, best iteration, top importances."""
    model = estimator.model
    per_round = model.n_groups  # multi:softprob: one tree per class and round
    kept = f"{len(model.trees)}" if per_round == 1 else \
        f"{len(model.trees) // per_round} rounds x {per_round} classes"
    rows = [("Trees kept", f"{kept} (built {trained} of {estimator.params.n_estimators})")]
    best = _best(estimator)
    if best is None:
        rows.append(("Best iteration", "— (give an eval_set to measure it)"))
    else:
        it, name, score = best
        early = "" if model.best_iteration is not None else ", not pruned"
        rows.append(("Best iteration", f"{it} ({name} {_fmt(score)}{early})"))
    for set_name, metrics in sorted(model.evals_result.items()):
        for metric, values in metrics.items():
            if values:
                label = (f"Held-out {metric} (eval set {int(set_name[11:]) + 1})"
                         if set_name.startswith("validation_") else f"Train {metric}")
                rows.append((label, _fmt(values[-1])))
    parties = ", ".join([model.party, *model.passives])
    rows.append(("Parties", parties))
    importances = dict(zip(estimator.feature_names_, estimator.feature_importances_.tolist(),
                           strict=True))
    top = sorted(((v, k) for k, v in importances.items() if v > 0), reverse=True)
    text = ", ".join(f"{k} {v:.1%}" for v, k in top[:_TOP_FEATURES]) or "no split made"
    if len(top) > _TOP_FEATURES:
        text += f" (+{len(top) - _TOP_FEATURES} more)"
    rows.append(("Top features (gain)", text))
    rows.append(("Time", f"{seconds:.1f} s"))
    return _table(rows, "fedlab-training-result")


class PassiveTrainingPanel(TaskPanel):
    """A feature holder's side of a SecureBoost run: press Serve while the label holder
    presses Train (same ``session``). ``party`` is a connected Party or a ConnectPanel;
    ``active`` the label holder's name (default: the only peer, if there is one).

    After the run, ``panel.model`` is the fitted :class:`~fedlab_kit.boost.SecureBoostPassive`
    (serve predictions with ``panel.model.predict(X, party=..., active=...)``).
    """

    def __init__(self, party: Any, X_own: Any, *, active: str | None = None,
                 eval_set: Sequence[Any] | None = None, insecure_plaintext: bool = False,
                 random_state: int | None = None, session: str = "boost",
                 timeout: float | None = None, min_child_rows: int = 20,
                 model: str = SECUREBOOST) -> None:
        if model not in _TITLES:
            raise InputTypeError(f"model must be {SECUREBOOST!r} or {LOGISTIC_REGRESSION!r}, "
                                 f"got {model!r}")
        if insecure_plaintext not in (True, False):
            raise InputTypeError(f"insecure_plaintext must be True or False, got "
                                 f"{insecure_plaintext!r}")
        self.party_source = party
        self.X_own = X_own
        self.eval_set = list(eval_set) if eval_set is not None else None
        self.insecure_plaintext = insecure_plaintext
        self.random_state = random_state
        self.session, self.timeout = session, timeout
        self.model: Any = None  # the fitted estimator
        if active is None:
            peers = _known_peers(party)
            active = peers[0] if len(peers) == 1 else ""
        self.active = widgets.Text(value=active, description="Label holder", style=_STYLE,
                                   placeholder="the party that trains, e.g. retailer")
        self.min_child_rows = widgets.IntText(
            value=min_child_rows, description="Min rows", style=_STYLE,
            tooltip="this party answers no node or split child of fewer rows (>= 1)")
        self.serve_button = widgets.Button(description="Serve training", button_style="primary",
                                           icon="play")
        self.security_note = widgets.HTML(
            box_html("insecure_plaintext=True: this party accepts UNENCRYPTED gradients. "
                     "For tests and benchmarks only.", "warning") if insecure_plaintext else "")
        self.status = widgets.HTML("")
        self.progress_label = widgets.HTML("")
        self.result_html = widgets.HTML("")
        self._task = Background(self.status, name="fedlab-boost-serve")
        self._started = 0.0
        self.serve_button.on_click(self._on_serve)
        self.model_choice = widgets.Dropdown(options=_MODELS, value=model, description="Model",
                                             style=_STYLE)
        self.title = widgets.HTML("")
        self.note = widgets.HTML("")
        self.widget = widgets.VBox([
            self.title, self.security_note, self.model_choice, self.active,
            self.min_child_rows, self.note, self.serve_button, self.status,
            self.progress_label, self.result_html,
        ])
        self.model_choice.observe(lambda _: self._model_changed(), names="value")
        self._model_changed()

    @property
    def logistic(self) -> bool:
        return bool(self.model_choice.value == LOGISTIC_REGRESSION)

    def _model_changed(self) -> None:
        self.title.value = f"<b>{_TITLES[self.model_choice.value]} (feature holder)</b>"
        self.min_child_rows.layout.display = "none" if self.logistic else ""
        self.note.value = (
            "<small>Per iteration the others get your columns' inner products with their "
            "encrypted contributions, masked; you learn your own gradient block. Your "
            "coefficients stay here.</small>" if self.logistic else
            "<small>The label holder learns the gradient sums of each node's rows per bin "
            "of your columns; no node or child of fewer rows than <i>Min rows</i> is "
            "answered.</small>")


    def _on_serve(self, _: Any = None) -> None:
        if self._task.busy:
            self.status.value = box_html("Already serving a training run.", "warning",
                                         "Serve refused")
            return
        try:
            party = _resolve_party(self.party_source, "serving needs the room")
            if party is None:
                raise FedlabError("serving a training run needs a connected party")
            active = self.active.value.strip()
            if not active:
                raise FedlabError("enter the name of the label holder that trains")
            if active not in party.peers:
                raise FedlabError(f"{active!r} is not in this room "
                                  f"(peers: {', '.join(party.peers) or 'none'})")
        except FedlabError as exc:
            self.status.value = error_html("Cannot serve", exc)
            return
        estimator: Any = (
            SecureLogisticPassive(insecure_plaintext=self.insecure_plaintext) if self.logistic
            else SecureBoostPassive(insecure_plaintext=self.insecure_plaintext,
                                    random_state=self.random_state,
                                    min_child_rows=self.min_child_rows.value))
        self.model = None
        self.result_html.value = self.progress_label.value = ""
        self.status.value = box_html(f"Serving the training run of {active!r} (session "
                                     f"{self.session!r}); waiting for it to press Train…",
                                     "info")
        self.serve_button.disabled = True
        self._started = time.monotonic()
        self._task.start(self._serve, estimator, party, active, title="Training failed",
                         on_success=self._show_result, on_done=self._finished)

    def _serve(self, estimator: Any, party: Party, active: str) -> Any:
        if isinstance(estimator, SecureLogisticPassive):
            return estimator.fit(self.X_own, party=party, active=active, session=self.session,
                                 timeout=self.timeout, progress=self._on_iteration)
        return estimator.fit(self.X_own, party=party, active=active, eval_set=self.eval_set,
                             session=self.session, timeout=self.timeout,
                             progress=self._on_tree)

    def _on_tree(self, trees: int, splits: int) -> None:
        """Live progress (called from the training thread)."""
        try:
            self.progress_label.value = html.escape(
                f"tree {trees} done · {splits} split{'s' * (splits != 1)} held here · "
                f"{time.monotonic() - self._started:.0f} s")
        except Exception:  # a display problem must not stop the training
            log.debug("training progress display failed", exc_info=True)

    def _on_iteration(self, k: int, max_iter: int, norm: float) -> None:
        try:
            self.progress_label.value = html.escape(
                f"iteration {k} done · {time.monotonic() - self._started:.0f} s")
        except Exception:  # a display problem must not stop the training
            log.debug("training progress display failed", exc_info=True)

    def _finished(self) -> None:
        self.serve_button.disabled = False

    def _show_result(self, estimator: Any) -> None:
        self.model = estimator
        if isinstance(estimator, SecureLogisticPassive):
            m, seconds = estimator.model, time.monotonic() - self._started
            rows = [("Label holder", m.parties[0]), ("Iterations", str(m.n_iter)),
                    ("Your coefficients (per std)", _coefficients(m)),
                    ("Time", f"{seconds:.1f} s")]
            self.result_html.value = _table(rows, "fedlab-serve-result")
            self.status.value = box_html(f"Logistic regression of {m.parties[0]!r} finished "
                                         f"after {m.n_iter} iterations. Your coefficients are "
                                         "in panel.model.", "ok")
            return
        model = estimator.model
        seconds = time.monotonic() - self._started
        uses: dict[str, int] = {}
        for rec in model.records.values():
            name = model.columns[rec.feature]
            uses[name] = uses.get(name, 0) + 1
        used = ", ".join(f"{k} ×{v}" for k, v in sorted(uses.items(), key=lambda kv: -kv[1]))
        rows = [("Label holder", model.active), ("Trees kept", str(len(model.trees))),
                ("Your splits", f"{len(model.records)} ({used or 'none of your columns'})"),
                ("Time", f"{seconds:.1f} s")]
        self.result_html.value = _table(rows, "fedlab-serve-result")
        self.status.value = box_html(f"Training of {model.active!r} finished: "
                                     f"{len(model.trees)} trees kept. Your part of the model "
                                     "is in panel.model.", "ok")

