"""Hyperparameters (named and checked as in XGBoost), objectives and evaluation metrics."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from .errors import BoostError

LOGISTIC = "binary:logistic"
SQUARED = "reg:squarederror"
SOFTPROB = "multi:softprob"
#: "p30" is the kit's own (not XGBoost's): the share of rows predicted within 30% of the truth
METRICS = {LOGISTIC: ("logloss", "auc", "error"), SQUARED: ("rmse", "mae", "p30"),
           SOFTPROB: ("mlogloss", "merror")}
MAXIMIZE = {"auc", "p30"}
P30_BAND = 0.30
MAX_BIN = 255  # bin codes are uint8; 255 marks a missing value
MAX_DEPTH = 20
EPS = 1e-16  # XGBoost's floor for the logistic hessian and the logloss clip
Margin = float | np.ndarray  # one margin, or one per class (multi:softprob)


@dataclass(frozen=True)
class BoostParams:
    """Training parameters of one SecureBoost model (XGBoost ``hist`` semantics)."""

    objective: str = LOGISTIC
    n_estimators: int = 100
    max_depth: int = 6
    learning_rate: float = 0.3
    max_bin: int = 32
    min_child_weight: float = 1.0
    reg_lambda: float = 1.0
    gamma: float = 0.0
    subsample: float = 1.0
    colsample_bytree: float = 1.0
    random_state: int | None = None
    base_score: float | None = None
    eval_metric: str | None = None
    num_class: int | None = None  # multi:softprob only (set by the classifier from the labels)
    min_child_rows: int = 20  # privacy floor: no child node of fewer rows (not in XGBoost)

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise BoostError(f"invalid hyperparameter: {what}")

        need(self.objective in METRICS, f"objective must be one of {sorted(METRICS)}, "
                                        f"got {self.objective!r}")
        for name in ("n_estimators", "max_depth", "max_bin", "min_child_rows"):
            v = getattr(self, name)
            need(isinstance(v, int | np.integer) and not isinstance(v, bool),
                 f"{name} must be an integer, got {v!r}")
        need(self.n_estimators >= 1, f"n_estimators must be >= 1, got {self.n_estimators}")
        need(self.min_child_rows >= 1,
             f"min_child_rows must be >= 1, got {self.min_child_rows}")
        need(1 <= self.max_depth <= MAX_DEPTH,
             f"max_depth must be in 1..{MAX_DEPTH}, got {self.max_depth}")
        need(2 <= self.max_bin <= MAX_BIN, f"max_bin must be in 2..{MAX_BIN}, got {self.max_bin}")
        for name in ("learning_rate", "min_child_weight", "reg_lambda", "gamma", "subsample",
                     "colsample_bytree"):
            v = getattr(self, name)
            need(isinstance(v, int | float | np.number) and not isinstance(v, bool)
                 and math.isfinite(v), f"{name} must be a finite number, got {v!r}")
        need(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        for name in ("min_child_weight", "reg_lambda", "gamma"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("subsample", "colsample_bytree"):
            v = getattr(self, name)
            need(0 < v <= 1, f"{name} must be in (0, 1], got {v}")
        rs = self.random_state
        need(rs is None or (isinstance(rs, int | np.integer) and rs >= 0),
             f"random_state must be None or a non-negative integer, got {rs!r}")
        bs = self.base_score
        if bs is not None:
            need(isinstance(bs, int | float | np.number) and math.isfinite(bs),
                 f"base_score must be a finite number, got {bs!r}")
            need(self.objective != LOGISTIC or 0 < bs < 1,
                 f"base_score must be in (0, 1) for {LOGISTIC}, got {bs}")
        nc = self.num_class
        if self.objective == SOFTPROB:
            need(isinstance(nc, int | np.integer) and not isinstance(nc, bool) and nc >= 3,
                 f"num_class must be an integer >= 3 for {SOFTPROB}, got {nc!r}")
        else:
            need(nc is None, f"num_class is for {SOFTPROB} only, got {nc!r}")
        # a classifier learns whether it is binary from the labels: it takes either metric
        allowed = METRICS[self.objective] + (METRICS[SOFTPROB] if self.objective == LOGISTIC
                                             else ())
        need(self.eval_metric is None or self.eval_metric in allowed,
             f"eval_metric for {self.objective} must be one of {allowed}, "
             f"got {self.eval_metric!r}")

    @property
    def n_groups(self) -> int:
        """Trees per boosting round: one per class for multi:softprob, else one."""
        return self.num_class if self.objective == SOFTPROB and self.num_class else 1

    @property
    def metric(self) -> str:
        return self.eval_metric or METRICS[self.objective][0]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BoostParams:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def check_labels(objective: str, y: Any, n_rows: int | None, what: str = "y") -> np.ndarray:
    """Labels as float64; NaN, wrong length or (binary) values outside {0, 1} are errors."""
    try:
        arr = np.asarray(y, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise BoostError(f"{what} must be numeric labels") from None
    if n_rows is not None and len(arr) != n_rows:
        raise BoostError(f"{what} has {len(arr)} labels but the features have {n_rows} rows")
    if len(arr) == 0:
        raise BoostError(f"{what} is empty: nothing to train on")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise BoostError(f"{what} has {int(bad.sum())} missing or infinite labels "
                         f"(first at row {int(np.argmax(bad))}); drop or fill them")
    if objective == LOGISTIC:
        odd = ~np.isin(arr, (0.0, 1.0))
        if odd.any():
            vals = sorted(set(arr[odd].tolist()))[:5]
            raise BoostError(f"{what} must hold binary labels 0/1 for {LOGISTIC}; "
                             f"found {vals} ({int(odd.sum())} rows)")
    return arr


def check_classes(y: Any, n_rows: int | None, what: str = "y",
                  n_classes: int | None = None) -> tuple[np.ndarray, int]:
    """Class labels 0..K-1 (K >= 2, every class present unless ``n_classes`` is given, as
    for an eval set) and K; anything else is an error naming the bad values."""
    arr = check_labels(SQUARED, y, n_rows, what)
    odd = (arr != np.round(arr)) | (arr < 0)
    if odd.any():
        vals = sorted(set(arr[odd].tolist()))[:5]
        raise BoostError(f"{what} must hold integer class labels 0, 1, ..., K-1 (binary "
                         f"labels 0/1 for two classes); found {vals} ({int(odd.sum())} rows)")
    k = int(arr.max()) + 1 if n_classes is None else n_classes
    if n_classes is None:
        if len(np.unique(arr)) < 2:
            raise BoostError(f"the training labels are all one class ({int(arr[0])}); the "
                             "classifier needs at least two classes")
        missing = sorted(set(range(k)) - set(arr.astype(np.int64).tolist()))
        if missing:
            bad = arr > missing[0]
            vals = sorted(set(arr[bad].astype(np.int64).tolist()))[:5]
            raise BoostError(f"{what} must hold consecutive class labels 0, 1, ..., K-1 "
                             f"(binary labels 0/1 for two classes); found {vals} "
                             f"({int(bad.sum())} rows) but no class {missing[:5]}")
    elif (arr >= k).any():
        vals = sorted(set(arr[arr >= k].astype(np.int64).tolist()))[:5]
        raise BoostError(f"{what} has classes {vals} that the training labels (0..{k - 1}) "
                         "do not have")
    return arr, k


def base_margin(objective: str, y: np.ndarray, base_score: float | None,
                num_class: int | None = None) -> Margin:
    """The starting margin: logit(mean label) for logistic, the mean for squared error;
    for multi:softprob the log class priors centred on 0 (as XGBoost 3.2 estimates
    them), or ``base_score`` for every class."""
    if objective == SOFTPROB:
        assert num_class is not None
        if base_score is not None:
            return np.full(num_class, float(base_score))
        prior = np.bincount(y.astype(np.int64), minlength=num_class) / len(y)
        if (prior == 0).any():
            raise BoostError("a class has no training rows")
        logp = np.log(prior)
        return logp - logp.mean()
    if objective == LOGISTIC:
        p = float(y.mean()) if base_score is None else float(base_score)
        if not 0 < p < 1:
            raise BoostError("the training labels are all one class; the classifier "
                             "needs both 0 and 1")
        return math.log(p / (1 - p))
    return float(y.mean()) if base_score is None else float(base_score)


def gradients(objective: str, margin: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and second derivatives of the loss at ``margin`` (as XGBoost computes them)."""
    if objective == LOGISTIC:
        p = transform(objective, margin)
        return p - y, np.maximum(p * (1 - p), EPS)
    if objective == SOFTPROB:  # margin (n, K); XGBoost's softmax hessian has a factor 2
        p = transform(objective, margin)
        onehot = y.astype(np.int64)[:, None] == np.arange(margin.shape[1])
        return p - onehot, np.maximum(2 * p * (1 - p), EPS)
    return margin - y, np.ones_like(margin)


def transform(objective: str, margin: np.ndarray) -> np.ndarray:
    """Margin to prediction: the probability of class 1, the (n, K) class probabilities
    (softmax) for multi:softprob, or the value itself."""
    if objective == LOGISTIC:
        return 1.0 / (1.0 + np.exp(-margin))
    if objective == SOFTPROB:
        e = np.exp(margin - margin.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return margin


def evaluate(metric: str, objective: str, y: np.ndarray, margin: np.ndarray) -> float:
    """One evaluation metric, as XGBoost defines it."""
    pred = transform(objective, margin)
    if metric in ("mlogloss", "merror"):
        proba = pred if pred.ndim == 2 else np.stack([1 - pred, pred], axis=1)
        cls = y.astype(np.int64)
        if metric == "merror":
            return float(np.mean(np.argmax(proba, axis=1) != cls))
        p = np.clip(proba[np.arange(len(cls)), cls], EPS, None)
        return float(-np.mean(np.log(p)))
    if metric == "logloss":
        p = np.clip(pred, EPS, 1 - EPS)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    if metric == "error":
        return float(np.mean((pred > 0.5) != (y > 0.5)))
    if metric == "auc":
        return auc(y, pred)
    if metric == "rmse":
        return float(np.sqrt(np.mean((pred - y) ** 2)))
    if metric == "mae":
        return float(np.mean(np.abs(pred - y)))
    if metric == "p30":
        return p30_share(pred, y)
    raise BoostError(f"unknown metric {metric!r}")


def p30_share(predicted: np.ndarray, true: np.ndarray) -> float:
    """Share of rows whose prediction is within 30% of the true value."""
    return float(np.mean(np.abs(predicted - true) <= P30_BAND * np.abs(true)))


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN with one class."""
    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    ranks = np.empty(len(s))
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # average 1-based rank
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
