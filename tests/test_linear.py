"""Vertical logistic regression: parity with scikit-learn, encrypted == plaintext, the
estimator API, bad input; sans-IO over LocalNetwork (the relay runs are in
test_linear_e2e.py, the attacks in test_linear_privacy.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from fedlab_kit.errors import ProtocolError
from fedlab_kit.linear import (
    LinearError,
    LinearTrainer,
    SecureLogisticPassive,
    SecureLogisticRegression,
)
from fedlab_kit.linear.backend import make_crypto
from fedlab_kit.linear.messages import CODEC, Step
from fedlab_kit.linear.trainer import LinearParams
from fedlab_kit.protocol import Envelope, LocalNetwork

pytestmark = pytest.mark.filterwarnings("ignore::fedlab_kit.linear.InsecurePlaintextWarning")
LABEL = "retailer"


def fit_local(est, X, y, passives: dict, **kwargs):
    protos = {LABEL: est.fit_protocol(LABEL, list(passives), X, y, **kwargs)}
    for name, (srv, Xp) in passives.items():
        protos[name] = srv.fit_protocol(name, LABEL, Xp)
    LocalNetwork(protos).run()
    return est


def predict_local(est, X, passives: dict) -> np.ndarray:
    protos = {LABEL: est.predict_protocol(X)}
    for name, (srv, Xp) in passives.items():
        protos[name] = srv.predict_protocol(LABEL, Xp)
    return LocalNetwork(protos).run()[LABEL]


def _breast():
    X, y = load_breast_cancer(return_X_y=True)
    return train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)


def _generated(n: int = 3000, d: int = 12, seed: int = 3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 20, d) + rng.uniform(-5, 5, d)
    logit = (X - X.mean(0)) / X.std(0) @ rng.normal(0, 1, d) - 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)


def _sklearn_auc(Xtr, ytr, Xte, yte, C=1.0) -> float:
    s = StandardScaler().fit(Xtr)
    ref = LogisticRegression(C=C, max_iter=5000).fit(s.transform(Xtr), ytr)
    return roc_auc_score(yte, ref.decision_function(s.transform(Xte)))


def test_breast_cancer_two_parties_within_0005_of_sklearn() -> None:
    Xtr, Xte, ytr, yte = _breast()
    clf = SecureLogisticRegression(C=1.0, tol=1e-6, insecure_plaintext=True)
    srv = SecureLogisticPassive(insecure_plaintext=True)
    fit_local(clf, Xtr[:, :15], ytr, {"media": (srv, Xtr[:, 15:])})
    ours = roc_auc_score(yte, predict_local(clf, Xte[:, :15], {"media": (srv, Xte[:, 15:])}))
    theirs = _sklearn_auc(Xtr, ytr, Xte, yte)
    assert ours > 0.98 and abs(ours - theirs) < 0.005
    assert clf.n_iter_ > 5  # it did iterate


def test_generated_three_parties_within_0005_of_sklearn() -> None:
    Xtr, Xte, ytr, yte = _generated()
    cols = np.array_split(np.arange(Xtr.shape[1]), 3)
    clf = SecureLogisticRegression(C=0.5, insecure_plaintext=True)
    passives = {"media": (SecureLogisticPassive(insecure_plaintext=True), Xtr[:, cols[1]]),
                "operator": (SecureLogisticPassive(insecure_plaintext=True), Xtr[:, cols[2]])}
    fit_local(clf, Xtr[:, cols[0]], ytr, passives)
    test = {n: (srv, Xte[:, c]) for (n, (srv, _)), c in zip(passives.items(), cols[1:],
                                                            strict=True)}
    ours = roc_auc_score(yte, predict_local(clf, Xte[:, cols[0]], test))
    theirs = _sklearn_auc(Xtr, ytr, Xte, yte, C=0.5)
    assert ours > 0.8 and abs(ours - theirs) < 0.005


def _taylor_optimum(X, y, C):
    """The minimiser of the kit's loss (first-order Taylor sigmoid, sklearn's L2 per row),
    in closed form on the standardised columns: what conjugate gradients must reach."""
    Z = StandardScaler().fit_transform(X)
    n, d = Z.shape
    Zb = np.c_[Z, np.ones(n)]
    reg = np.eye(d + 1) / (C * n)
    reg[-1, -1] = 0
    return np.linalg.solve(0.25 * Zb.T @ Zb / n + reg, Zb.T @ (y - 0.5) / n)


@pytest.mark.parametrize("parties", [1, 2, 3])
def test_conjugate_gradients_reach_the_closed_form_whatever_the_split(parties: int) -> None:
    Xtr, _, ytr, _ = _generated(n=1500, d=9)
    cols = np.array_split(np.arange(9), parties)
    clf = SecureLogisticRegression(C=2.0, tol=1e-7, insecure_plaintext=True)
    srvs = {f"p{i}": (SecureLogisticPassive(insecure_plaintext=True), Xtr[:, c])
            for i, c in enumerate(cols[1:])}
    fit_local(clf, Xtr[:, cols[0]], ytr, srvs)
    w = np.concatenate([clf.model.weights] + [s.model.weights for s, _ in srvs.values()]
                       + [[clf.model.intercept]])
    np.testing.assert_allclose(w, _taylor_optimum(Xtr, ytr, 2.0), atol=2e-3)


def test_encrypted_run_equals_plaintext_run_three_parties() -> None:
    Xtr, _, ytr, _ = _generated(n=900, d=6)
    models = {}
    for insecure in (True, False):
        clf = SecureLogisticRegression(C=1.0, max_iter=8, insecure_plaintext=insecure)
        a, b = (SecureLogisticPassive(insecure_plaintext=insecure) for _ in range(2))
        fit_local(clf, Xtr[:, :2], ytr, {"media": (a, Xtr[:, 2:4]), "operator": (b, Xtr[:, 4:])})
        models[insecure] = np.concatenate([clf.model.weights, [clf.model.intercept],
                                           a.model.weights, b.model.weights])
    assert np.abs(models[True]).max() > 0.05  # a model, not zeros
    np.testing.assert_allclose(models[False], models[True], atol=1e-6, rtol=0)


def test_coef_on_original_scale_and_prediction_match_the_blocks() -> None:
    Xtr, Xte, ytr, _ = _generated(n=1200, d=4)
    clf = SecureLogisticRegression(insecure_plaintext=True)
    srv = SecureLogisticPassive(insecure_plaintext=True)
    fit_local(clf, Xtr[:, :2], ytr, {"media": (srv, Xtr[:, 2:])})
    z = predict_local(clf, Xte[:, :2], {"media": (srv, Xte[:, 2:])})
    by_coef = Xte[:, :2] @ clf.coef_ + clf.intercept_ + Xte[:, 2:] @ srv.coef_ + srv.offset_
    np.testing.assert_allclose(z, by_coef, atol=1e-6)
    assert clf.coef_.shape == (2,) and srv.coef_.shape == (2,)
    assert list(clf.feature_names_in_) == ["f0", "f1"]


def test_federated_beats_the_label_holder_alone() -> None:
    Xtr, Xte, ytr, yte = _generated(n=3000, d=10)
    alone = SecureLogisticRegression(insecure_plaintext=True)
    alone.fit(Xtr[:, :3], ytr, party=None, passive=[])
    clf = SecureLogisticRegression(insecure_plaintext=True)
    srv = SecureLogisticPassive(insecure_plaintext=True)
    fit_local(clf, Xtr[:, :3], ytr, {"media": (srv, Xtr[:, 3:])})
    fed = roc_auc_score(yte, predict_local(clf, Xte[:, :3], {"media": (srv, Xte[:, 3:])}))
    own = roc_auc_score(yte, alone.decision_function(Xte[:, :3], party=None))
    assert fed > own + 0.03


def test_estimator_conventions_and_json_round_trip(tmp_path) -> None:
    clf = SecureLogisticRegression(C=0.3, max_iter=7)
    assert clone(clf).get_params() == clf.get_params()
    assert clf.set_params(tol=1e-3).tol == 1e-3
    Xtr, Xte, ytr, _ = _generated(n=600, d=4)
    clf = SecureLogisticRegression(insecure_plaintext=True)
    srv = SecureLogisticPassive(insecure_plaintext=True)
    fit_local(clf, Xtr[:, :2], ytr, {"media": (srv, Xtr[:, 2:])})
    clf.save(tmp_path / "a.json")
    srv.save(tmp_path / "b.json")
    clf2 = SecureLogisticRegression.load(tmp_path / "a.json")
    srv2 = SecureLogisticPassive.load(tmp_path / "b.json")
    np.testing.assert_array_equal(
        predict_local(clf, Xte[:, :2], {"media": (srv, Xte[:, 2:])}),
        predict_local(clf2, Xte[:, :2], {"media": (srv2, Xte[:, 2:])}))
    with pytest.raises(LinearError, match="feature holder's part"):
        SecureLogisticRegression.load(tmp_path / "b.json")
    doc = json.loads((tmp_path / "a.json").read_text())
    doc["weights"] = doc["weights"][:1]
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(LinearError, match="damaged"):
        SecureLogisticRegression.load(tmp_path / "bad.json")


@pytest.mark.parametrize(("X", "y", "message"), [
    (np.ones((50, 2)), np.r_[np.zeros(25), np.ones(25)], "constant columns"),
    (np.c_[np.arange(50.0), np.r_[np.nan, np.arange(49.0)]], np.r_[np.zeros(25), np.ones(25)],
     "missing values"),
    (np.c_[np.arange(50.0)], np.r_[np.zeros(25), 2 * np.ones(25)], "binary labels"),
    (np.c_[np.arange(50.0)], np.zeros(50), "one class"),
    (np.c_[np.arange(50.0)], np.r_[np.zeros(25), np.ones(24)], "49 labels"),
    (np.array([["a", "b"]] * 50, dtype=object), np.r_[np.zeros(25), np.ones(25)],
     "non-numeric"),
])
def test_bad_input_is_a_clear_error(X, y, message: str) -> None:
    with pytest.raises(LinearError, match=message):
        SecureLogisticRegression(insecure_plaintext=True).fit(X, y, party=None, passive=[])


@pytest.mark.parametrize(("param", "value"), [("C", 0), ("C", -1.0), ("max_iter", 0),
                                               ("tol", 1.5), ("fit_intercept", "yes")])
def test_bad_hyperparameters_are_clear_errors(param: str, value) -> None:
    clf = SecureLogisticRegression(insecure_plaintext=True).set_params(**{param: value})
    with pytest.raises(LinearError, match=param):
        clf.fit(np.c_[np.arange(20.0)], np.r_[np.zeros(10), np.ones(10)], party=None,
                passive=[])


def test_misaligned_rows_stop_every_party_with_the_reason() -> None:
    rng = np.random.default_rng(0)
    clf = SecureLogisticRegression(insecure_plaintext=True)
    srv = SecureLogisticPassive(insecure_plaintext=True)
    protos = {LABEL: clf.fit_protocol(LABEL, ["media"], rng.normal(size=(40, 2)),
                                      np.r_[np.zeros(20), np.ones(20)]),
              "media": srv.fit_protocol("media", LABEL, rng.normal(size=(39, 2)))}
    with pytest.raises(LinearError, match="align the rows with PSI"):
        LocalNetwork(protos).run()


def test_too_few_rows_for_a_partys_columns_are_refused() -> None:
    """With about as many columns as rows, a feature holder could solve its first gradient
    X^T (1/2 - y) / n for the labels: the run is refused before any gradient."""
    rng = np.random.default_rng(0)
    protos = {LABEL: SecureLogisticRegression(insecure_plaintext=True).fit_protocol(
                  LABEL, ["media"], rng.normal(size=(40, 2)), np.r_[np.zeros(20), np.ones(20)]),
              "media": SecureLogisticPassive(insecure_plaintext=True).fit_protocol(
                  "media", LABEL, rng.normal(size=(40, 30)))}
    with pytest.raises(LinearError, match="too few for 'media'"):
        LocalNetwork(protos).run()


def test_mismatched_encryption_settings_are_refused() -> None:
    rng = np.random.default_rng(0)
    protos = {LABEL: SecureLogisticRegression(insecure_plaintext=True).fit_protocol(
                  LABEL, ["media"], rng.normal(size=(40, 2)), np.r_[np.zeros(20), np.ones(20)]),
              "media": SecureLogisticPassive().fit_protocol("media", LABEL,
                                                            rng.normal(size=(40, 2)))}
    with pytest.raises(LinearError, match="insecure_plaintext"):
        LocalNetwork(protos).run()


def test_out_of_turn_and_repeated_messages_are_refused() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 2)), np.r_[np.zeros(20), np.ones(20)]
    a = LinearTrainer(LABEL, X, make_crypto(True), y=y, passives=["media"],
                      params=LinearParams(max_iter=3))
    b = LinearTrainer("media", X, make_crypto(True), label_holder=LABEL)
    log = a.start()
    envs = [Envelope(LABEL, "media", "s", x.kind, i, bytes(x.payload))
            for i, x in enumerate(log)]
    b.on_message(envs[0])  # setup
    b.on_message(envs[1])  # hello: round 0 begins
    with pytest.raises(ProtocolError, match="second hello"):
        b.on_message(envs[1])
    with pytest.raises(ProtocolError, match="unexpected setup"):
        b.on_message(envs[0])
    late = Envelope(LABEL, "media", "s", "linear/step", 9,
                    CODEC.encode(Step(5, 0.1, 0.1, 1.0, False)))
    with pytest.raises(ProtocolError, match="unexpected step"):
        b.on_message(late)


def test_request_stop_ends_every_party_at_the_same_iteration() -> None:
    Xtr, _, ytr, _ = _generated(n=800, d=6)
    clf = SecureLogisticRegression(tol=0, max_iter=50, insecure_plaintext=True)
    srv = SecureLogisticPassive(insecure_plaintext=True)
    seen = []

    def progress(k: int, total: int, norm: float) -> None:
        seen.append(k)
        if k == 3:
            clf.request_stop()

    fit_local(clf, Xtr[:, :3], ytr, {"media": (srv, Xtr[:, 3:])}, progress=progress)
    assert clf.n_iter_ == srv.model.n_iter == 4 and seen == [0, 1, 2, 3, 4]


def test_sparse_one_hot_columns_with_all_zero_blocks_train_encrypted() -> None:
    """A block of rows where a party's columns are all zero (one-hot data) gives no product
    (SEAL refuses a transparent one): the run still equals the plaintext run."""
    rng = np.random.default_rng(4)
    n = 5000  # blocks of 2048 rows (the label holder has 3 columns with the intercept)
    X = np.zeros((n, 2))
    X[rng.choice(2048, 30, replace=False), 0] = 1.0  # rare categories, first block only
    X[n - 100:, 1] = 1.0  # the middle block is all zero
    own = rng.normal(size=(n, 2))
    y = (rng.random(n) < 1 / (1 + np.exp(-(own[:, 0] + 2 * X[:, 0])))).astype(int)
    models = {}
    for insecure in (True, False):
        clf = SecureLogisticRegression(max_iter=4, insecure_plaintext=insecure)
        srv = SecureLogisticPassive(insecure_plaintext=insecure)
        fit_local(clf, own, y, {"media": (srv, X)})
        models[insecure] = srv.model.weights
    np.testing.assert_allclose(models[False], models[True], atol=1e-6, rtol=0)
