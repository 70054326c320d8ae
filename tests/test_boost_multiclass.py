"""SecureBoost ``multi:softprob``: parity with XGBClassifier, encrypted == plaintext, labels,
early stopping and the JSON model."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from boost_workers import fit_local, predict_local
from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split

from fedlab_kit.boost import (
    BoostError,
    BoostParams,
    SecureBoostClassifier,
    SecureBoostPassive,
    SecureBoostRegressor,
)
from fedlab_kit.boost.params import SOFTPROB, evaluate, transform
from fedlab_kit.protocol import LocalNetwork

pytestmark = pytest.mark.filterwarnings("ignore::fedlab_kit.boost.InsecurePlaintextWarning")
PARAMS = {"n_estimators": 20, "max_depth": 3, "learning_rate": 0.3, "max_bin": 32}


def _wine():
    X, y = load_wine(return_X_y=True)
    return train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)


def _pair(**params):
    return (SecureBoostClassifier(**params, min_child_rows=1, insecure_plaintext=True),
            SecureBoostPassive(min_child_rows=1, insecure_plaintext=True))


def test_wine_two_parties_match_xgboost() -> None:
    Xtr, Xte, ytr, yte = _wine()
    clf, srv = _pair(**PARAMS)
    fit_local(clf, Xtr[:, :6], ytr, {"media": (srv, Xtr[:, 6:])})
    margin = predict_local(clf, Xte[:, :6], {"media": (srv, Xte[:, 6:])})
    ref = xgb.XGBClassifier(tree_method="hist", **PARAMS).fit(Xtr, ytr)
    ours, theirs = transform(SOFTPROB, margin), ref.predict_proba(Xte)
    assert margin.shape == (len(yte), 3) and len(clf.model.trees) == 3 * 20
    assert clf.model.tree_class == [0, 1, 2] * 20
    assert len(srv.model.trees) == 60 and len(srv.model.records) > 0
    ll = evaluate("mlogloss", SOFTPROB, yte, margin)
    ll_ref = evaluate("mlogloss", SOFTPROB, yte, np.log(theirs))
    assert abs(ll - ll_ref) < 0.01
    assert abs(int((ours.argmax(1) == yte).sum()) - int((ref.predict(Xte) == yte).sum())) <= 1
    # wine's quantile cuts come out as XGBoost's: the probabilities are XGBoost's (float32)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    owners = {n.owner for t in clf.model.trees for n in t if not n.is_leaf}
    assert owners == {"retailer", "media"}


def test_one_round_is_xgboost_tree_by_tree() -> None:
    """Base margins (centred log priors), gradients and the softmax hessian's factor 2."""
    X, y = load_wine(return_X_y=True)
    params = {"n_estimators": 2, "max_depth": 2, "max_bin": 32, "reg_lambda": 2.0,
              "min_child_weight": 3.0}
    clf = SecureBoostClassifier(**params, min_child_rows=1,
                                insecure_plaintext=True).fit(X, y, party=None,
                                                                       passive=[])
    ref = xgb.XGBClassifier(tree_method="hist", **params).fit(X, y)
    ours, theirs = clf.predict_margin(X, party=None), ref.predict(X, output_margin=True)
    # XGBoost 3.2 starts from the same centred log priors; older versions may use 0.5 for
    # every class, which softmax cannot tell apart: compare the margins centred per row
    np.testing.assert_allclose(ours - ours.mean(1, keepdims=True),
                               theirs - theirs.mean(1, keepdims=True), atol=2e-5)
    if tuple(map(int, xgb.__version__.split(".")[:2])) >= (3, 2):
        np.testing.assert_allclose(ours, theirs, atol=2e-5)
    np.testing.assert_allclose(clf.feature_importances_, ref.feature_importances_, atol=1e-5)
    assert (clf.predict(X, party=None) == ref.predict(X)).all()
    assert list(clf.classes_) == [0, 1, 2]


def _four_classes(n: int = 500):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(n, 6))
    X[rng.random(X.shape) < 0.05] = np.nan
    score = np.nan_to_num(X[:, 0] + X[:, 2]) + 0.5 * np.nan_to_num(X[:, 4])
    y = np.digitize(score + rng.normal(0, 0.3, n), [-1.0, 0.0, 1.0])
    return X, y


def test_encrypted_three_parties_equal_plaintext() -> None:
    X, y = _four_classes()
    params = {"n_estimators": 3, "max_depth": 3, "max_bin": 16}
    out = {}
    for secure in (True, False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = SecureBoostClassifier(**params, min_child_rows=1, insecure_plaintext=not secure)
            parties = {
                "media": (SecureBoostPassive(min_child_rows=1, insecure_plaintext=not secure),
                          X[:, 2:4]),
                "operator": (SecureBoostPassive(min_child_rows=1, insecure_plaintext=not secure),
                             X[:, 4:])}
            fit_local(clf, X[:, :2], y, parties)
            out[secure] = predict_local(clf, X[:, :2], parties)
    assert out[True].shape == (len(y), 4)
    np.testing.assert_allclose(out[True], out[False], atol=1e-6)
    assert (out[True].argmax(1) == y).mean() > 0.7


@pytest.mark.parametrize(("y", "match"), [
    ([0, 1, 3, 1], r"consecutive.*\[3\].*no class \[2\]"),
    ([1, 2, 2, 1], r"consecutive.*\[1, 2\].*no class \[0\]"),
    ([0, -1, 2, 1], r"integer class labels.*\[-1\.0\]"),
    ([0, 1.5, 2, 1], r"integer class labels.*\[1\.5\]"),
    ([2, 2, 2, 2], "all one class"),
    ([0, 1, np.nan, 2], "missing"),
])
def test_bad_labels_are_named(y: list, match: str) -> None:
    clf = SecureBoostClassifier(n_estimators=2, insecure_plaintext=True)
    with pytest.raises(BoostError, match=match):
        clf.fit_protocol("retailer", [], np.zeros((4, 2)), y)


def test_eval_labels_must_be_training_classes() -> None:
    X, y = _four_classes(200)
    clf = SecureBoostClassifier(n_estimators=2, insecure_plaintext=True)
    with pytest.raises(BoostError, match=r"eval_set\[0\] y has classes \[4\]"):
        clf.fit_protocol("retailer", [], X, y, eval_set=[(X[:3], [0, 4, 1])])
    with pytest.raises(BoostError, match="eval_metric for multi:softprob"):
        SecureBoostClassifier(eval_metric="auc").fit_protocol("retailer", [], X, y)


def test_early_stopping_per_round_and_merror() -> None:
    X, y = _four_classes(700)
    tr, va = slice(0, 500), slice(500, 700)
    seen: list[tuple[int, int]] = []
    clf, srv = _pair(n_estimators=60, max_depth=4, learning_rate=0.5, eval_metric="merror")
    fit_local(clf, X[tr, :3], y[tr], {"media": (srv, X[tr, 3:])},
              eval_set=[(X[va, :3], y[va])], passive_eval={"media": [X[va, 3:]]},
              early_stopping_rounds=3, progress=lambda t, n, mets: seen.append((t, n)))
    model = clf.model
    rounds = len(model.evals_result["validation_0"]["merror"])
    assert seen == [(t, 60) for t in range(rounds)]  # one report a round
    assert rounds < 60 and model.best_iteration == rounds - 4
    assert len(model.trees) == 4 * (model.best_iteration + 1) == len(srv.model.trees)
    margin = predict_local(clf, X[va, :3], {"media": (srv, X[va, 3:])})
    assert evaluate("merror", SOFTPROB, y[va], margin) == pytest.approx(model.best_score)
    assert clf.feature_importances_.shape == (6,) and clf.feature_importances_.sum() == (
        pytest.approx(1.0))


def test_save_load_round_trip(tmp_path: Path) -> None:
    Xtr, Xte, ytr, _ = _wine()
    clf, srv = _pair(n_estimators=5, max_depth=3)
    fit_local(clf, Xtr[:, :6], ytr, {"media": (srv, Xtr[:, 6:])})
    clf.save(tmp_path / "a.json")
    srv.save(tmp_path / "p.json")
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["num_class"] == 3 and doc["tree_class"] == [0, 1, 2] * 5
    assert doc["params"]["objective"] == "multi:softprob" and len(doc["base_margin"]) == 3
    clf2 = SecureBoostClassifier.load(tmp_path / "a.json")
    srv2 = SecureBoostPassive.load(tmp_path / "p.json")
    parties = {"media": (srv, Xte[:, 6:])}
    before = predict_local(clf, Xte[:, :6], parties)
    after = predict_local(clf2, Xte[:, :6], {"media": (srv2, Xte[:, 6:])})
    np.testing.assert_array_equal(before, after)
    assert before.shape == (len(Xte), 3) and list(clf2.classes_) == [0, 1, 2]
    with pytest.raises(BoostError, match="multi:softprob model, not reg:squarederror"):
        SecureBoostRegressor.load(tmp_path / "a.json")
    doc["tree_class"] = [0, 2, 1] * 5
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(BoostError, match="whole rounds"):
        SecureBoostClassifier.load(tmp_path / "bad.json")


def test_predict_returns_class_labels_alone() -> None:
    X, y = _four_classes(300)
    clf = SecureBoostClassifier(n_estimators=5, max_depth=3, insecure_plaintext=True)
    clf.fit(X, y, party=None, passive=[])
    proba = clf.predict_proba(X, party=None)
    assert proba.shape == (300, 4) and np.allclose(proba.sum(axis=1), 1)
    pred = clf.predict(X, party=None)
    assert pred.dtype == np.int64 and (pred == proba.argmax(1)).all()
    assert (pred == y).mean() > 0.7 and list(clf.classes_) == [0, 1, 2, 3]


def test_a_stop_request_keeps_whole_rounds() -> None:
    X, y = _four_classes(200)
    clf, srv = _pair(n_estimators=10, max_depth=2)
    trainer = clf.fit_protocol("retailer", ["media"], X[:, :3], y)
    trainer.on_tree = lambda t, n, mets: trainer.request_stop() if t == 1 else None
    LocalNetwork({"retailer": trainer,
                  "media": srv.fit_protocol("media", "retailer", X[:, 3:])}).run()
    assert len(clf.model.trees) == len(srv.model.trees) == 2 * 4
    assert trainer.progress() == (2, 10)


def test_num_class_goes_with_softprob_only() -> None:
    with pytest.raises(BoostError, match="num_class must be an integer >= 3"):
        BoostParams(objective=SOFTPROB)
    with pytest.raises(BoostError, match="num_class is for multi:softprob only"):
        BoostParams(num_class=3)
    p = BoostParams(objective=SOFTPROB, num_class=4)
    assert p.n_groups == 4 and p.metric == "mlogloss" and BoostParams().n_groups == 1
