"""SecureBoost is XGBoost ``hist``: parity with xgboost, and federated == centralised."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb
from boost_workers import fit_local, predict_local
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from fedlab_kit.boost import SecureBoostClassifier, SecureBoostPassive, SecureBoostRegressor

pytestmark = pytest.mark.filterwarnings("ignore::fedlab_kit.boost.InsecurePlaintextWarning")


def _local(est, X, y, **kwargs):
    est.fit(X, y, party=None, passive=[], **kwargs)
    return est


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def test_breast_cancer_two_parties_match_xgboost_auc() -> None:
    X, y = load_breast_cancer(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    params = {"n_estimators": 20, "max_depth": 3, "learning_rate": 0.3, "max_bin": 32}
    clf = SecureBoostClassifier(**params, min_child_rows=1, insecure_plaintext=True)
    srv = SecureBoostPassive(min_child_rows=1, insecure_plaintext=True)
    fit_local(clf, Xtr[:, :15], ytr, {"media": (srv, Xtr[:, 15:])})
    margin = predict_local(clf, Xte[:, :15], {"media": (srv, Xte[:, 15:])})
    ref = xgb.XGBClassifier(tree_method="hist", **params).fit(Xtr, ytr)
    ours, theirs = roc_auc_score(yte, margin), roc_auc_score(yte, ref.predict_proba(Xte)[:, 1])
    assert ours > 0.97
    assert abs(ours - theirs) < 0.005
    # both parties' columns were used, and the passive kept the thresholds of its splits
    owners = {n.owner for t in clf.model.trees for n in t if not n.is_leaf}
    assert owners == {"retailer", "media"} and len(srv.model.records) > 0


def _grid_data(seed: int, n: int, n_features: int, missing: float = 0.0):
    """Features with few distinct values: XGBoost's and our bins are then identical."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 12, size=(n, n_features)).astype(float)
    y = (0.6 * X[:, 0] + 2 * np.sin(X[:, 1]) + 0.1 * X[:, 2] * X[:, 3]
         + rng.normal(0, 0.5, n))
    if missing:
        X[rng.random(X.shape) < missing] = np.nan
    return X, y


@pytest.mark.parametrize("extra", [{}, {"gamma": 2.0, "reg_lambda": 3.0, "min_child_weight": 4.0}])
def test_identical_bins_give_xgboost_predictions(extra: dict) -> None:
    """With identical bins the trees are XGBoost's: same splits, gains and leaf values (up
    to XGBoost's float32), with missing values, gamma, lambda and min_child_weight."""
    X, y = _grid_data(1, 600, 6, missing=0.1)
    Xtest, _ = _grid_data(2, 300, 6, missing=0.2)
    params = {"n_estimators": 15, "max_depth": 4, "learning_rate": 0.3, "max_bin": 16, **extra}
    reg = _local(SecureBoostRegressor(**params, min_child_rows=1, insecure_plaintext=True), X, y)
    ref = xgb.XGBRegressor(tree_method="hist", **params).fit(X, y)
    np.testing.assert_allclose(reg.predict(Xtest, party=None), ref.predict(Xtest), atol=2e-5)
    np.testing.assert_allclose(reg.feature_importances_, ref.feature_importances_, atol=1e-5)
    yb = (y > np.median(y)).astype(int)
    clf = _local(SecureBoostClassifier(**params, min_child_rows=1, insecure_plaintext=True), X, yb)
    refc = xgb.XGBClassifier(tree_method="hist", **params).fit(X, yb)
    np.testing.assert_allclose(clf.predict_proba(Xtest, party=None)[:, 1],
                               refc.predict_proba(Xtest)[:, 1], atol=2e-5)
    assert (clf.predict(Xtest, party=None) == refc.predict(Xtest)).all()
    if extra:  # the regularisation made a difference
        plain = _local(SecureBoostRegressor(n_estimators=15, max_depth=4, max_bin=16,
                                            insecure_plaintext=True), X, y)
        diff = plain.predict(Xtest, party=None) - reg.predict(Xtest, party=None)
        assert np.abs(diff).max() > 0.01


def test_regression_two_parties_rmse_within_one_percent_of_xgboost() -> None:
    X, y = _grid_data(3, 1500, 6)
    Xtr, Xte, ytr, yte = X[:1000], X[1000:], y[:1000], y[1000:]
    params = {"n_estimators": 30, "max_depth": 4, "learning_rate": 0.2, "max_bin": 32}
    reg = SecureBoostRegressor(**params, min_child_rows=1, insecure_plaintext=True)
    srv = SecureBoostPassive(min_child_rows=1, insecure_plaintext=True)
    fit_local(reg, Xtr[:, :3], ytr, {"operator": (srv, Xtr[:, 3:])})
    ours = _rmse(predict_local(reg, Xte[:, :3], {"operator": (srv, Xte[:, 3:])}), yte)
    theirs = _rmse(xgb.XGBRegressor(tree_method="hist", **params).fit(Xtr, ytr).predict(Xte), yte)
    assert ours < 0.8 * float(np.std(yte))
    assert abs(ours / theirs - 1) < 0.01


def test_continuous_features_rmse_close_to_xgboost_on_average() -> None:
    """On continuous data XGBoost's quantile sketch is approximate, so cuts differ by a
    rank here and there; averaged over datasets the error is the same."""
    ratios = []
    params = {"n_estimators": 40, "max_depth": 3, "learning_rate": 0.1, "max_bin": 32}
    for seed in range(5):
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(1500, 6))
        y = (2 * X[:, 0] + np.sin(2 * X[:, 1]) + np.abs(X[:, 2]) + 0.5 * X[:, 3]
             + rng.normal(0, 0.5, 1500))
        reg = _local(SecureBoostRegressor(**params, min_child_rows=1, insecure_plaintext=True),
                     X[:1000], y[:1000])
        ref = xgb.XGBRegressor(tree_method="hist", **params).fit(X[:1000], y[:1000])
        ratios.append(_rmse(reg.predict(X[1000:], party=None), y[1000:])
                      / _rmse(ref.predict(X[1000:]), y[1000:]))
    assert abs(np.mean(ratios) - 1) < 0.01
    assert max(abs(r - 1) for r in ratios) < 0.03


def _split_columns(X: np.ndarray, widths: list[int]) -> list[np.ndarray]:
    return np.split(X, np.cumsum(widths)[:-1], axis=1)


@pytest.mark.parametrize("params", [
    {"n_estimators": 12, "max_depth": 4, "max_bin": 20},
    {"n_estimators": 12, "max_depth": 3, "max_bin": 8, "subsample": 0.7,
     "colsample_bytree": 0.6, "random_state": 5, "min_child_weight": 0.0, "reg_lambda": 0.5},
])
def test_two_parties_equal_one_party_with_all_columns(params: dict) -> None:
    """Federated training gives exactly the model one party would train on all columns."""
    rng = np.random.default_rng(11)
    X = rng.normal(size=(500, 8))
    X[rng.random(X.shape) < 0.15] = np.nan
    score = np.nan_to_num(X[:, 0] - X[:, 5] + X[:, 6] * X[:, 2])
    y = (score + rng.normal(0, 0.5, 500) > 0).astype(int)
    Xnew = rng.normal(size=(200, 8))
    Xnew[rng.random(Xnew.shape) < 0.15] = np.nan
    central = _local(SecureBoostClassifier(**params, min_child_rows=1,
                                           insecure_plaintext=True), X, y)
    clf = SecureBoostClassifier(**params, min_child_rows=1, insecure_plaintext=True)
    srv = SecureBoostPassive(min_child_rows=1, insecure_plaintext=True, random_state=1)
    fit_local(clf, X[:, :4], y, {"media": (srv, X[:, 4:])})
    fed = predict_local(clf, Xnew[:, :4], {"media": (srv, Xnew[:, 4:])})
    np.testing.assert_allclose(fed, central.predict_margin(Xnew, party=None), rtol=0, atol=1e-12)
    gains = [n.gain for t in clf.model.trees for n in t if not n.is_leaf]
    np.testing.assert_allclose(gains, [n.gain for t in central.model.trees for n in t
                                       if not n.is_leaf], rtol=1e-12)
    names = clf.feature_names_
    assert names[:4] == ["f0", "f1", "f2", "f3"] and names[4:] == [f"media:f{i}" for i in range(4)]
    np.testing.assert_allclose(clf.feature_importances_, central.feature_importances_, atol=1e-12)


def test_three_parties_equal_one_party_and_beat_the_label_holder_alone() -> None:
    rng = np.random.default_rng(12)
    n = 900
    X = rng.normal(size=(n, 9))
    y = X[:, 0] + 2 * np.sin(X[:, 4]) + np.abs(X[:, 7]) * 1.5 + rng.normal(0, 0.3, n)
    tr, te = slice(0, 600), slice(600, n)
    params = {"n_estimators": 25, "max_depth": 3, "learning_rate": 0.3, "max_bin": 32}
    reg = SecureBoostRegressor(**params, min_child_rows=1, insecure_plaintext=True)
    media, operator = (SecureBoostPassive(min_child_rows=1, insecure_plaintext=True)
                       for _ in range(2))
    own, xm, xo = _split_columns(X, [3, 3, 3])
    fit_local(reg, own[tr], y[tr], {"media": (media, xm[tr]), "operator": (operator, xo[tr])})
    fed = predict_local(reg, own[te], {"media": (media, xm[te]), "operator": (operator, xo[te])})
    central = _local(SecureBoostRegressor(**params, min_child_rows=1,
                                          insecure_plaintext=True), X[tr], y[tr])
    np.testing.assert_allclose(fed, central.predict(X[te], party=None), rtol=0, atol=1e-12)
    alone = _local(SecureBoostRegressor(**params, min_child_rows=1,
                                        insecure_plaintext=True), own[tr], y[tr])
    assert _rmse(fed, y[te]) < 0.6 * _rmse(alone.predict(own[te], party=None), y[te])
    owners = {n.owner for t in reg.model.trees for n in t if not n.is_leaf}
    assert owners == {"retailer", "media", "operator"}


def test_label_holder_without_features() -> None:
    """The active party may bring only labels: every split is then a passive's."""
    rng = np.random.default_rng(13)
    X = rng.normal(size=(400, 4))
    y = (X[:, 1] + X[:, 2] > 0).astype(int)
    clf = SecureBoostClassifier(n_estimators=8, max_depth=3, insecure_plaintext=True)
    srv = SecureBoostPassive(min_child_rows=1, insecure_plaintext=True)
    fit_local(clf, None, y, {"media": (srv, X)})
    fed = predict_local(clf, np.zeros((400, 0)), {"media": (srv, X)})
    central = _local(SecureBoostClassifier(n_estimators=8, max_depth=3, insecure_plaintext=True),
                     X, y)
    np.testing.assert_allclose(fed, central.predict_margin(X, party=None), atol=1e-12)
    assert all(n.owner == "media" for t in clf.model.trees for n in t if not n.is_leaf)
