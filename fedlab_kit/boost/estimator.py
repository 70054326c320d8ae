"""Estimators: ``SecureBoostClassifier``/``SecureBoostRegressor`` for the label holder,
``SecureBoostPassive`` for each feature holder. Each party keeps only its part of the model.

All parties call ``fit`` (then ``predict``) at the same time with rows aligned by PSI (row i
is the same person everywhere)::

    # label holder                                  # each feature holder
    clf = SecureBoostClassifier(n_estimators=50)    srv = SecureBoostPassive()
    clf.fit(X_own, y, party=party,                  srv.fit(X_own, party=party,
            passive=["media", "operator"])                  active="retailer")
    p = clf.predict_proba(X_new, party=party)       srv.predict(X_new, party=party,
                                                                active="retailer")

``*_protocol`` methods give the underlying sans-IO protocols, for
:class:`~fedlab_kit.protocol.LocalNetwork` or a custom driver.
The estimators follow scikit-learn's conventions (``get_params``, ``set_params``, ``clone``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from ..net.driver import run, stopping
from ..protocol import LocalNetwork, Protocol
from .active import ActivePredictor, ActiveTrainer, EvalSet, TreeCallback
from .backend import make_backends
from .binning import as_matrix, select
from .errors import BoostError
from .model import ActiveModel, PassiveModel
from .params import (
    LOGISTIC,
    SOFTPROB,
    SQUARED,
    BoostParams,
    check_classes,
    check_labels,
    transform,
)
from .passive import PassivePredictor, PassiveTrainer

LOCAL = "local"


def _drive(party: Any, peers: list[str], build: Callable[[], Protocol], *, session: str,
           timeout: float | None, what: str) -> Any:
    """Build a protocol and run it; an error (also while building it, e.g. bad input) is
    told to the peers, so they stop at once with this party's reason."""
    if party is None:
        if peers:
            raise BoostError("party is None, but other parties take part: pass the Party")
        return LocalNetwork({LOCAL: build()}).run()[LOCAL]
    with stopping(party, peers, session=session, protocol=what):
        proto = build()
        return run(party, proto, session=session, timeout=timeout, watch=peers)


def _name(party: Any) -> str:
    return LOCAL if party is None else party.name


def _workers(party: Any) -> Any:
    """Where ``party`` runs its heavy work (None: this machine's processes)."""
    return getattr(party, "workers", None)


def _check_flag(name: str, value: Any) -> None:
    if value not in (True, False):
        raise BoostError(f"{name} must be True or False, got {value!r}")


class _ActiveEstimator(BaseEstimator):  # type: ignore[misc]
    """The label holder's estimator (shared by the classifier and the regressor).

    As in scikit-learn, the constructor only stores its arguments (``get_params``,
    ``set_params`` and ``sklearn.base.clone`` work); they are checked by :meth:`fit`.
    """

    _objective = LOGISTIC
    _objectives: tuple[str, ...] = (LOGISTIC,)  # what load() accepts
    _trainer: ActiveTrainer | None = None  # the run in progress, for request_stop()
    _stop_requested = False
    model_: ActiveModel | None = None

    def __init__(
        self, *, n_estimators: int = 100, max_depth: int = 6, learning_rate: float = 0.3,
        max_bin: int = 32, min_child_weight: float = 1.0, reg_lambda: float = 1.0,
        gamma: float = 0.0, subsample: float = 1.0, colsample_bytree: float = 1.0,
        random_state: int | None = None, base_score: float | None = None,
        eval_metric: str | None = None, early_stopping_rounds: int | None = None,
        min_child_rows: int = 20, insecure_plaintext: bool = False,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.max_bin = max_bin
        self.min_child_weight = min_child_weight
        self.reg_lambda = reg_lambda
        self.gamma = gamma
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.random_state = random_state
        self.base_score = base_score
        self.eval_metric = eval_metric
        self.early_stopping_rounds = early_stopping_rounds
        self.min_child_rows = min_child_rows
        self.insecure_plaintext = insecure_plaintext

    @property
    def params(self) -> BoostParams:
        """The training parameters, checked (a :class:`BoostError` names a bad one)."""
        _check_flag("insecure_plaintext", self.insecure_plaintext)
        return BoostParams(
            self._objective, self.n_estimators, self.max_depth, self.learning_rate,
            self.max_bin, self.min_child_weight, self.reg_lambda, self.gamma, self.subsample,
            self.colsample_bytree, self.random_state, self.base_score, self.eval_metric,
            min_child_rows=self.min_child_rows)

    # ---------------------------------------------------------------- training
    def fit_protocol(
        self, me: str, passive: Sequence[str], X_own: Any, y: Any, *,
        eval_set: Sequence[tuple[Any, Any]] | None = None,
        early_stopping_rounds: int | None = None, progress: TreeCallback | None = None,
        workers: Any = None,
    ) -> ActiveTrainer:
        """The training protocol; when it finishes, this estimator holds the model.
        ``X_own`` may be None when the label holder brings no features.
        ``early_stopping_rounds`` overrides the constructor's. ``workers``: where the
        encryption runs (a :class:`~fedlab_kit.compute.Workers`; default: this machine)."""
        if early_stopping_rounds is None:
            early_stopping_rounds = self.early_stopping_rounds
        if isinstance(passive, str):
            raise BoostError("passive must be a list of party names")
        labels, params = self._labels(y, None)
        if X_own is None:
            X, columns = np.zeros((len(labels), 0)), []
        else:
            X, columns = as_matrix(X_own, "X_own")
        self._labels(labels, len(X))
        if not columns and not passive:
            raise BoostError("no features: the label holder has none and no passive party")
        evals = []
        for i, (Xe, ye) in enumerate(eval_set or []):
            ex = (np.zeros((len(np.asarray(ye)), 0)) if X_own is None
                  else select(Xe, columns, f"eval_set[{i}] X"))
            evals.append(EvalSet(ex, self._labels(ye, len(ex), f"eval_set[{i}] y", params)[0]))
        backends = make_backends(self.insecure_plaintext, workers)
        trainer = ActiveTrainer(me, list(passive), X, columns, labels, params,
                                backends.active(), secure=backends.secure,
                                eval_sets=evals, early_stopping_rounds=early_stopping_rounds,
                                on_tree=progress, on_done=self._fitted)
        self._trainer = trainer
        return trainer

    def _labels(self, y: Any, n_rows: int | None, what: str = "y",
                fitted: BoostParams | None = None) -> tuple[np.ndarray, BoostParams]:
        """Checked labels and the parameters to train with (eval labels: ``fitted``'s)."""
        return check_labels(self._objective, y, n_rows, what), self.params

    def request_stop(self) -> None:
        """Ask the training in progress (:meth:`fit` running in another thread, or the
        last :meth:`fit_protocol`) to end after the current tree (round, for multiclass)
        and keep the trees so far, as early stopping does; every passive party keeps the
        same trees. A request made while :meth:`fit` is not running has no effect on the
        next one."""
        self._stop_requested = True
        trainer = self._trainer
        if trainer is not None:
            trainer.request_stop()

    def _armed(self, trainer: ActiveTrainer) -> ActiveTrainer:
        """``trainer``, told to stop if that was asked while it was being built."""
        if self._stop_requested:
            trainer.request_stop()
        return trainer

    def _fitted(self, model: ActiveModel) -> None:
        self.model_ = model

    def fit(
        self, X_own: Any, y: Any, *, party: Any, passive: Sequence[str],
        eval_set: Sequence[tuple[Any, Any]] | None = None,
        early_stopping_rounds: int | None = None, session: str = "boost",
        progress: TreeCallback | None = None, timeout: float | None = None,
    ) -> _ActiveEstimator:
        """Train with the ``passive`` parties (``party=None`` and ``passive=[]`` trains
        alone). ``progress(tree, n_trees, metrics)`` is called after every tree
        (every round of K trees for multiclass)."""
        passive = list(passive)
        unknown = [p for p in passive if party is not None and p not in party.peers]
        if unknown:
            raise BoostError(f"passive parties {unknown} are not in this room")
        self._stop_requested = False
        try:
            _drive(party, passive, lambda: self._armed(self.fit_protocol(
                       _name(party), passive, X_own, y, eval_set=eval_set,
                       early_stopping_rounds=early_stopping_rounds, progress=progress,
                       workers=_workers(party))),
                   session=f"{session}/fit", timeout=timeout, what="SecureBoost training")
        finally:
            self._trainer, self._stop_requested = None, False
        return self

    # -------------------------------------------------------------- prediction
    @property
    def model(self) -> ActiveModel:
        if self.model_ is None:
            raise BoostError("this model is not trained yet: call fit() or load() first")
        return self.model_

    def predict_protocol(self, me: str, X_own: Any,
                         batch_rows: int | None = None) -> ActivePredictor:
        """A federated prediction round; its result is the margin of every row."""
        model = self.model
        if not model.columns and (X_own is None or isinstance(X_own, int)):
            raise BoostError("the label holder has no feature columns: pass X_own with one "
                             "row per prediction row (e.g. an empty frame of the right length)")
        X = (np.zeros((len(X_own), 0)) if not model.columns
             else select(X_own, model.columns, "X_own"))
        return ActivePredictor(me, model, X, batch_rows)

    def predict_margin(self, X_own: Any, *, party: Any, session: str = "boost",
                       timeout: float | None = None) -> np.ndarray:
        """Raw margins (log-odds for the classifier; (n, K) for multiclass), one federated
        round."""
        return _drive(party, list(self.model.passives),
                      lambda: self.predict_protocol(_name(party), X_own),
                      session=f"{session}/predict", timeout=timeout,
                      what="SecureBoost prediction")

    # ------------------------------------------------------------- inspection
    @property
    def feature_importances_(self) -> np.ndarray:
        """Gain importance of own columns, then each passive's (see ``feature_names_``)."""
        return np.array(list(self.model.feature_importances().values()))

    @property
    def feature_names_(self) -> list[str]:
        return list(self.model.feature_importances())

    @property
    def evals_result_(self) -> dict[str, dict[str, list[float]]]:
        return self.model.evals_result

    @property
    def best_iteration(self) -> int | None:
        return self.model.best_iteration

    @property
    def best_score(self) -> float | None:
        return self.model.best_score

    def save(self, path: str | Path) -> None:
        """Write this party's part of the model as JSON."""
        self.model.save(path)

    @classmethod
    def load(cls, path: str | Path, *, insecure_plaintext: bool = False) -> Any:
        model = ActiveModel.load(path)
        if model.params.objective not in cls._objectives:
            raise BoostError(f"{str(path)!r} holds a {model.params.objective} model, not "
                             f"{' or '.join(cls._objectives)}")
        p = model.params
        est = cls(n_estimators=p.n_estimators, max_depth=p.max_depth,
                  learning_rate=p.learning_rate, max_bin=p.max_bin,
                  min_child_weight=p.min_child_weight, reg_lambda=p.reg_lambda, gamma=p.gamma,
                  subsample=p.subsample, colsample_bytree=p.colsample_bytree,
                  random_state=p.random_state, base_score=p.base_score,
                  eval_metric=p.eval_metric, min_child_rows=p.min_child_rows,
                  insecure_plaintext=insecure_plaintext)
        est.model_ = model
        return est


class SecureBoostClassifier(_ActiveEstimator):
    """Classifier trained with the feature holders, on labels 0..K-1 as XGBClassifier:
    ``binary:logistic`` for two classes, ``multi:softprob`` (K trees a round, ``n_estimators``
    rounds) for more."""

    _objective = LOGISTIC
    _objectives = (LOGISTIC, SOFTPROB)

    def _labels(self, y: Any, n_rows: int | None, what: str = "y",
                fitted: BoostParams | None = None) -> tuple[np.ndarray, BoostParams]:
        k = None if fitted is None else max(2, fitted.n_groups)
        labels, k = check_classes(y, n_rows, what, k)
        if fitted is not None:
            return labels, fitted
        params = (dataclasses.replace(self.params, objective=LOGISTIC, num_class=None) if k == 2
                  else dataclasses.replace(self.params, objective=SOFTPROB, num_class=k))
        return labels, params

    @property
    def classes_(self) -> np.ndarray:
        """The class labels, 0..K-1."""
        return np.arange(max(2, self.model.n_groups))

    def predict_proba(self, X_own: Any, *, party: Any, session: str = "boost",
                      timeout: float | None = None) -> np.ndarray:
        """(n, K) class probabilities, one federated round."""
        margin = self.predict_margin(X_own, party=party, session=session, timeout=timeout)
        if self.model.n_groups > 1:
            return transform(SOFTPROB, margin)
        p1 = transform(LOGISTIC, margin)
        return np.stack([1 - p1, p1], axis=1)

    def predict(self, X_own: Any, *, party: Any, session: str = "boost",
                timeout: float | None = None) -> np.ndarray:
        """Class labels, one federated round."""
        margin = self.predict_margin(X_own, party=party, session=session, timeout=timeout)
        if self.model.n_groups > 1:
            return np.argmax(margin, axis=1).astype(np.int64)
        return (margin > 0).astype(np.int64)


class SecureBoostRegressor(_ActiveEstimator):
    """Regressor (``reg:squarederror``) trained with the feature holders."""

    _objective = SQUARED
    _objectives = (SQUARED,)

    def predict(self, X_own: Any, *, party: Any, session: str = "boost",
                timeout: float | None = None) -> np.ndarray:
        """Predicted values, one federated round."""
        return self.predict_margin(X_own, party=party, session=session, timeout=timeout)


class SecureBoostPassive(BaseEstimator):  # type: ignore[misc]
    """A feature holder's part of a SecureBoost model: serves training and prediction.

    It answers only what it agreed to: no node or child of fewer than ``min_child_rows``
    rows (its own floor, whatever the label holder asks), at most the setup's depth and
    trees, and only nodes that are children of splits it has seen.
    """

    model_: PassiveModel | None = None

    def __init__(self, insecure_plaintext: bool = False, random_state: int | None = None,
                 min_child_rows: int = 20) -> None:
        self.insecure_plaintext = insecure_plaintext
        self.random_state = random_state
        self.min_child_rows = min_child_rows

    def fit_protocol(self, me: str, active: str, X_own: Any, *,
                     eval_set: Sequence[Any] | None = None,
                     progress: Callable[[int, int], None] | None = None,
                     workers: Any = None) -> PassiveTrainer:
        """The protocol serving one training run; when it finishes, this holds the model.
        ``progress(trees, splits)``: after each tree, the trees so far and the splits held
        here. ``workers``: where the histograms are computed (default: this machine)."""
        _check_flag("insecure_plaintext", self.insecure_plaintext)
        m = self.min_child_rows
        if not isinstance(m, int | np.integer) or isinstance(m, bool) or m < 1:
            raise BoostError(f"min_child_rows must be an integer >= 1, got {m!r}")
        X, columns = as_matrix(X_own, "X_own")
        evals = [select(Xe, columns, f"eval_set[{i}]") for i, Xe in enumerate(eval_set or [])]
        if self.insecure_plaintext:
            make_backends(True)  # the loud warning
        rng = (None if self.random_state is None
               else np.random.default_rng(self.random_state))
        return PassiveTrainer(me, active, X, columns, allow_plaintext=self.insecure_plaintext,
                              eval_sets=evals, rng=rng, on_done=self._fitted, on_tree=progress,
                              min_child_rows=int(m), workers=workers)

    def _fitted(self, model: PassiveModel) -> None:
        self.model_ = model

    def fit(self, X_own: Any, *, party: Any, active: str, eval_set: Sequence[Any] | None = None,
            session: str = "boost", timeout: float | None = None,
            progress: Callable[[int, int], None] | None = None) -> SecureBoostPassive:
        """Serve the training run of ``active`` (same ``session``, at the same time);
        ``progress(trees, splits)`` after each tree."""
        _drive(party, [active], lambda: self.fit_protocol(_name(party), active, X_own,
                                                          eval_set=eval_set, progress=progress,
                                                          workers=_workers(party)),
               session=f"{session}/fit", timeout=timeout, what="SecureBoost training")
        return self

    @property
    def model(self) -> PassiveModel:
        if self.model_ is None:
            raise BoostError("this model is not trained yet: call fit() or load() first")
        return self.model_

    def predict_protocol(self, me: str, active: str, X_own: Any) -> PassivePredictor:
        model = self.model
        if active != model.active:
            raise BoostError(f"this model was trained with active party {model.active!r}, "
                             f"not {active!r}")
        return PassivePredictor(me, model, select(X_own, model.columns, "X_own"))

    def predict(self, X_own: Any, *, party: Any, active: str, session: str = "boost",
                timeout: float | None = None) -> None:
        """Serve one prediction round of the active party (once per call it makes)."""
        _drive(party, [active], lambda: self.predict_protocol(_name(party), active, X_own),
               session=f"{session}/predict", timeout=timeout, what="SecureBoost prediction")

    def save(self, path: str | Path) -> None:
        """Write this party's records and tree shapes as JSON."""
        self.model.save(path)

    @classmethod
    def load(cls, path: str | Path, *, insecure_plaintext: bool = False) -> SecureBoostPassive:
        est = cls(insecure_plaintext=insecure_plaintext)
        est.model_ = PassiveModel.load(path)
        return est
