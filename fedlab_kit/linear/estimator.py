"""Estimators: ``SecureLogisticRegression`` for the label holder, ``SecureLogisticPassive``
for each feature holder. Each party keeps only its block of the model.

All parties call ``fit`` (then ``predict``) at the same time with rows aligned by PSI::

    # label holder                                   # each feature holder
    clf = SecureLogisticRegression(C=1.0)            lr = SecureLogisticPassive()
    clf.fit(X_own, y, party=party,                   lr.fit(X_own, party=party,
            passive=["media", "operator"])                  active="retailer")
    p = clf.predict_proba(X_new, party=party)        lr.predict(X_new, party=party,
                                                                active="retailer")

``*_protocol`` methods give the sans-IO protocols, for
:class:`~fedlab_kit.protocol.LocalNetwork` or a custom driver. The estimators follow
scikit-learn's conventions (``get_params``, ``set_params``, ``clone``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from ..boost.binning import as_matrix, select
from ..boost.estimator import _drive, _name
from ..boost.params import LOGISTIC, check_labels
from ..errors import InputError
from .backend import make_crypto
from .errors import LinearError
from .fixed import scaled, standardise
from .model import FEATURE, LABEL, LinearModel
from .predictor import FeaturePredictor, LabelPredictor
from .trainer import Fitted, IterationCallback, LinearParams, LinearTrainer


def _matrix(X: Any, what: str, columns: list[str] | None = None
            ) -> tuple[np.ndarray, list[str]]:
    """A numeric matrix without missing values (a linear model has no default for them)."""
    try:
        mat, cols = as_matrix(X, what) if columns is None else (select(X, columns, what),
                                                                columns)
    except InputError as exc:
        raise LinearError(str(exc)) from None
    missing = [c for c, col in zip(cols, np.isnan(mat).T, strict=True) if col.any()]
    if missing:
        raise LinearError(f"{what} has missing values in columns {missing[:5]}: fill or drop "
                          "them first (logistic regression has no default for them)")
    return mat, cols


def _flag(name: str, value: Any) -> None:
    if value not in (True, False):
        raise LinearError(f"{name} must be True or False, got {value!r}")


class SecureLogisticRegression(BaseEstimator):  # type: ignore[misc]
    """Binary logistic regression trained with the feature holders (labels 0/1).

    The sigmoid is replaced by its first-order Taylor expansion (as FATE's hetero-LR and
    SecretFlow's default); ``C`` is sklearn's inverse L2 strength (the intercept is not
    penalised); conjugate gradients stop after ``max_iter`` iterations or when the gradient
    norm falls below ``tol`` times its initial value. Each party standardises its own
    columns; ``coef_`` is per original column of the label holder's own features.
    """

    model_: LinearModel | None = None
    _trainer: LinearTrainer | None = None
    _stop_requested = False

    def __init__(self, *, C: float = 1.0, max_iter: int = 100, tol: float = 1e-4,
                 fit_intercept: bool = True, insecure_plaintext: bool = False) -> None:
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.fit_intercept = fit_intercept
        self.insecure_plaintext = insecure_plaintext

    @property
    def params(self) -> LinearParams:
        return LinearParams(self.C, self.max_iter, self.tol, self.fit_intercept).check()

    # ---------------------------------------------------------------- training
    def fit_protocol(self, me: str, passive: Sequence[str], X_own: Any, y: Any, *,
                     progress: IterationCallback | None = None) -> LinearTrainer:
        """The training protocol; when it finishes, this estimator holds the model.
        ``X_own`` may be None when the label holder brings no features."""
        _flag("insecure_plaintext", self.insecure_plaintext)
        if isinstance(passive, str):
            raise LinearError("passive must be a list of party names")
        params = self.params
        try:
            labels = check_labels(LOGISTIC, y, None, "y")
        except InputError as exc:
            raise LinearError(str(exc)) from None
        if X_own is None:
            X, columns = np.zeros((len(labels), 0)), []
        else:
            X, columns = _matrix(X_own, "X_own")
        if len(X) != len(labels):
            raise LinearError(f"y has {len(labels)} labels but X_own has {len(X)} rows")
        if not columns and not passive:
            raise LinearError("no features: the label holder has none and no passive party")
        if len(np.unique(labels)) < 2:
            raise LinearError("y holds one class only: logistic regression needs both 0 and 1")
        mean, std = standardise(X, columns, "X_own")
        crypto = make_crypto(self.insecure_plaintext)

        def done(fit: Fitted) -> None:
            w = fit.weights
            intercept = float(w[-1]) if params.fit_intercept else None
            own = w[:-1] if params.fit_intercept else w
            self.model_ = LinearModel(fit.model_id, me, LABEL, fit.parties, columns, mean, std,
                                      own, intercept, fit.n_iter,
                                      {"C": params.C, "max_iter": params.max_iter,
                                       "tol": params.tol,
                                       "fit_intercept": params.fit_intercept}, fit.seeds)

        trainer = LinearTrainer(me, scaled(X, mean, std), crypto, y=labels,
                                passives=list(passive), params=params, on_iteration=progress,
                                on_done=done)
        self._trainer = trainer
        if self._stop_requested:
            trainer.request_stop()
        return trainer

    def request_stop(self) -> None:
        """Ask the training in progress to end after the current iteration, keeping the
        weights so far (every party stops at the same iteration)."""
        self._stop_requested = True
        if self._trainer is not None:
            self._trainer.request_stop()

    def fit(self, X_own: Any, y: Any, *, party: Any, passive: Sequence[str],
            session: str = "linear", progress: IterationCallback | None = None,
            timeout: float | None = None) -> SecureLogisticRegression:
        """Train with the ``passive`` parties (``party=None`` and ``passive=[]`` trains
        alone). ``progress(iteration, max_iter, gradient_norm)`` after every iteration."""
        passive = list(passive)
        unknown = [p for p in passive if party is not None and p not in party.peers]
        if unknown:
            raise LinearError(f"passive parties {unknown} are not in this room")
        self._stop_requested = False
        try:
            _drive(party, passive, lambda: self.fit_protocol(_name(party), passive, X_own, y,
                                                             progress=progress),
                   session=f"{session}/fit", timeout=timeout,
                   what="logistic regression training")
        finally:
            self._trainer, self._stop_requested = None, False
        return self

    # -------------------------------------------------------------- prediction
    @property
    def model(self) -> LinearModel:
        if self.model_ is None:
            raise LinearError("this model is not trained yet: call fit() or load() first")
        return self.model_

    def predict_protocol(self, X_own: Any) -> LabelPredictor:
        model = self.model
        if not model.columns:
            if X_own is None or isinstance(X_own, int):
                raise LinearError("the label holder has no feature columns: pass X_own with "
                                  "one row per prediction row (e.g. an empty frame)")
            X = np.zeros((len(X_own), 0))
        else:
            X, _ = _matrix(X_own, "X_own", model.columns)
        return LabelPredictor(model, X)

    def decision_function(self, X_own: Any, *, party: Any, session: str = "linear",
                          timeout: float | None = None) -> np.ndarray:
        """The logit of every row, one federated round."""
        return _drive(party, list(self.model.parties[1:]),
                      lambda: self.predict_protocol(X_own), session=f"{session}/predict",
                      timeout=timeout, what="logistic regression prediction")

    def predict_proba(self, X_own: Any, *, party: Any, session: str = "linear",
                      timeout: float | None = None) -> np.ndarray:
        """(n, 2) class probabilities, one federated round."""
        z = self.decision_function(X_own, party=party, session=session, timeout=timeout)
        p1 = 1.0 / (1.0 + np.exp(-z))
        return np.stack([1 - p1, p1], axis=1)

    def predict(self, X_own: Any, *, party: Any, session: str = "linear",
                timeout: float | None = None) -> np.ndarray:
        """Class labels 0/1, one federated round."""
        z = self.decision_function(X_own, party=party, session=session, timeout=timeout)
        return (z > 0).astype(np.int64)

    # ------------------------------------------------------------- inspection
    @property
    def classes_(self) -> np.ndarray:
        return np.arange(2)

    @property
    def coef_(self) -> np.ndarray:
        """Coefficients of the label holder's own columns (original scale)."""
        return self.model.coef

    @property
    def intercept_(self) -> float:
        """The intercept on the original scale of the label holder's columns (each feature
        holder's block adds its own constant, :attr:`SecureLogisticPassive.offset_`)."""
        return self.model.offset

    @property
    def feature_names_in_(self) -> np.ndarray:
        return np.array(self.model.columns, dtype=object)

    @property
    def n_iter_(self) -> int:
        return self.model.n_iter

    def save(self, path: str | Path) -> None:
        """Write this party's block as JSON (it holds the pairwise mask seeds: keep it as
        private as the data)."""
        self.model.save(path)

    @classmethod
    def load(cls, path: str | Path, *, insecure_plaintext: bool = False
             ) -> SecureLogisticRegression:
        model = LinearModel.load(path, LABEL)
        p = model.params
        est = cls(C=p["C"], max_iter=p["max_iter"], tol=p["tol"],
                  fit_intercept=p["fit_intercept"], insecure_plaintext=insecure_plaintext)
        est.model_ = model
        return est


class SecureLogisticPassive(BaseEstimator):  # type: ignore[misc]
    """A feature holder's block of a vertical logistic regression: serves training and
    prediction, standardising its own columns."""

    model_: LinearModel | None = None

    def __init__(self, insecure_plaintext: bool = False) -> None:
        self.insecure_plaintext = insecure_plaintext

    def fit_protocol(self, me: str, active: str, X_own: Any, *,
                     progress: IterationCallback | None = None) -> LinearTrainer:
        _flag("insecure_plaintext", self.insecure_plaintext)
        X, columns = _matrix(X_own, "X_own")
        if not columns:
            raise LinearError("X_own has no columns: a feature holder brings at least one")
        mean, std = standardise(X, columns, "X_own")
        crypto = make_crypto(self.insecure_plaintext)

        def done(fit: Fitted) -> None:
            self.model_ = LinearModel(fit.model_id, me, FEATURE, fit.parties, columns, mean,
                                      std, fit.weights, None, fit.n_iter, {}, fit.seeds)

        return LinearTrainer(me, scaled(X, mean, std), crypto, label_holder=active,
                             on_iteration=progress, on_done=done)

    def fit(self, X_own: Any, *, party: Any, active: str, session: str = "linear",
            timeout: float | None = None, progress: IterationCallback | None = None
            ) -> SecureLogisticPassive:
        """Serve the training run of ``active`` (same ``session``, at the same time)."""
        _drive(party, [active], lambda: self.fit_protocol(_name(party), active, X_own,
                                                          progress=progress),
               session=f"{session}/fit", timeout=timeout, what="logistic regression training")
        return self

    @property
    def model(self) -> LinearModel:
        if self.model_ is None:
            raise LinearError("this model is not trained yet: call fit() or load() first")
        return self.model_

    def predict_protocol(self, active: str, X_own: Any) -> FeaturePredictor:
        model = self.model
        if active != model.parties[0]:
            raise LinearError(f"this model was trained with label holder "
                              f"{model.parties[0]!r}, not {active!r}")
        X, _ = _matrix(X_own, "X_own", model.columns)
        return FeaturePredictor(model, X)

    def predict(self, X_own: Any, *, party: Any, active: str, session: str = "linear",
                timeout: float | None = None) -> None:
        """Serve one prediction round of the label holder (once per call it makes)."""
        _drive(party, [active], lambda: self.predict_protocol(active, X_own),
               session=f"{session}/predict", timeout=timeout,
               what="logistic regression prediction")

    @property
    def coef_(self) -> np.ndarray:
        """Coefficients of this party's columns (original scale)."""
        return self.model.coef

    @property
    def offset_(self) -> float:
        """This block's constant on the original scale (the intercept is the label
        holder's)."""
        return self.model.offset

    @property
    def feature_names_in_(self) -> np.ndarray:
        return np.array(self.model.columns, dtype=object)

    def save(self, path: str | Path) -> None:
        """Write this party's block as JSON (with the pairwise mask seeds: keep it
        private)."""
        self.model.save(path)

    @classmethod
    def load(cls, path: str | Path, *, insecure_plaintext: bool = False
             ) -> SecureLogisticPassive:
        est = cls(insecure_plaintext=insecure_plaintext)
        est.model_ = LinearModel.load(path, FEATURE)
        return est
