"""SecureBoost protocols in memory: missing values, persistence, early stopping, privacy,
bad input and misbehaving peers."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from boost_workers import ACTIVE, fit_local, predict_local

from fedlab_kit.boost import (
    ActiveModel,
    BoostError,
    PassiveModel,
    SecureBoostClassifier,
    SecureBoostPassive,
    SecureBoostRegressor,
)
from fedlab_kit.boost import messages as m
from fedlab_kit.errors import ProtocolError
from fedlab_kit.protocol import Compute, Envelope, LocalNetwork, Send

pytestmark = pytest.mark.filterwarnings("ignore::fedlab_kit.boost.InsecurePlaintextWarning")


def _data(seed: int = 0, n: int = 400, missing: float = 0.0):
    rng = np.random.default_rng(seed)
    own = pd.DataFrame({"spend": rng.gamma(2, 50, n), "visits": rng.poisson(3, n).astype(float),
                        "tenure": rng.integers(0, 60, n).astype(float)})
    media = pd.DataFrame({"exposures": rng.poisson(5, n) + 0.5,
                          "screen_time": rng.normal(3, 1, n),
                          "age": rng.integers(18, 80, n) + 0.25})
    logit = (own["spend"] / 50 - 2 + 0.4 * (media["exposures"] - 5.5)
             + (media["screen_time"] - 3) + rng.normal(0, 0.5, n))
    y = (logit > 0).astype(int).to_numpy()
    if missing:
        for frame in (own, media):
            for c in frame.columns:
                frame.loc[rng.random(n) < missing, c] = np.nan
    return own, media, y


def _pair(params: dict | None = None, **kwargs):
    clf = SecureBoostClassifier(**{"n_estimators": 10, "max_depth": 3, "min_child_rows": 1,
                                   **(params or {})}, insecure_plaintext=True, **kwargs)
    return clf, SecureBoostPassive(insecure_plaintext=True, min_child_rows=1)


# ------------------------------------------------------------------ missing values
@pytest.mark.parametrize("holder", ["active", "passive"])
def test_missing_values_learn_a_default_direction(holder: str) -> None:
    """NaN rows behave like small values; the split must send them left, at either party."""
    rng = np.random.default_rng(1)
    n = 600
    x = rng.normal(size=n)
    y = (x > 0.3).astype(int)
    x[(y == 0) & (rng.random(n) < 0.4)] = np.nan  # missing only among negatives
    noise = rng.normal(size=(n, 2))
    signal = np.column_stack([x, noise[:, 0]])
    own, other = (signal, noise[:, 1:]) if holder == "active" else (noise[:, 1:], signal)
    clf, srv = _pair({"n_estimators": 5, "max_depth": 2})
    fit_local(clf, own, y, {"media": (srv, other)})
    root = clf.model.trees[0][0]
    if holder == "active":
        assert root.owner == ACTIVE and root.default_left and root.feature == 0
    else:
        assert root.owner == "media"
        rec = srv.model.records[root.record]
        assert rec.default_left and rec.feature == 0 and 0.0 < rec.threshold < 0.6
    test = np.array([np.nan, -2.0, 2.0, np.nan])
    t_own = np.column_stack([test, np.zeros(4)]) if holder == "active" else np.zeros((4, 1))
    t_other = np.zeros((4, 1)) if holder == "active" else np.column_stack([test, np.zeros(4)])
    margin = predict_local(clf, t_own, {"media": (srv, t_other)})
    assert (margin[[0, 1, 3]] < 0).all() and margin[2] > 0


def test_save_and_load_give_identical_predictions(tmp_path: Path) -> None:
    own, media, y = _data(2, missing=0.1)
    clf, srv = _pair({"n_estimators": 8})
    fit_local(clf, own, y, {"media": (srv, media)})
    own_new, media_new, _ = _data(3, 150, missing=0.1)
    before = predict_local(clf, own_new, {"media": (srv, media_new)})
    clf.save(tmp_path / "retailer.json")
    srv.save(tmp_path / "media.json")
    clf2 = SecureBoostClassifier.load(tmp_path / "retailer.json")
    srv2 = SecureBoostPassive.load(tmp_path / "media.json", insecure_plaintext=True)
    after = predict_local(clf2, own_new[["tenure", "visits", "spend"]],  # columns by name
                          {"media": (srv2, media_new)})
    np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(clf2.feature_importances_, clf.feature_importances_)
    assert clf2.feature_names_[-3:] == ["media:exposures", "media:screen_time", "media:age"]
    doc = json.loads((tmp_path / "media.json").read_text())
    assert {r["feature"] for r in doc["records"].values()} <= set(media.columns)
    active_text = (tmp_path / "retailer.json").read_text()
    for rec in srv.model.records.values():  # the active's file holds no passive threshold
        assert repr(rec.threshold) not in active_text
    with pytest.raises(BoostError, match="passive party's part"):
        SecureBoostClassifier.load(tmp_path / "media.json")
    with pytest.raises(BoostError, match="binary:logistic"):
        SecureBoostRegressor.load(tmp_path / "retailer.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(BoostError, match="cannot read"):
        SecureBoostPassive.load(tmp_path / "junk.json")


# ------------------------------------------------------------ early stopping, progress
def test_p30_eval_metric_is_the_share_within_30_percent() -> None:
    """The kit's own regression metric (the POI crowd's P30), per tree on an eval set, and
    early stopping maximises it."""
    from fedlab_kit.analytics.poi_crowd import p30

    rng = np.random.default_rng(8)
    X = rng.integers(0, 10, size=(400, 3)).astype(float)
    y = 50 + 10 * X[:, 0] + rng.normal(0, 8, 400)
    reg = SecureBoostRegressor(n_estimators=15, max_depth=3, learning_rate=0.5, max_bin=16,
                               eval_metric="p30", min_child_rows=1)
    reg.fit(X[:300], y[:300], party=None, passive=[], eval_set=[(X[300:], y[300:])])
    history = reg.evals_result_["validation_0"]["p30"]
    assert len(history) == 15 and 0 <= history[0] < history[-1] <= 1.0
    assert history[-1] == pytest.approx(p30(reg.predict(X[300:], party=None), y[300:]))
    stopped = SecureBoostRegressor(n_estimators=40, max_depth=3, learning_rate=0.5, max_bin=16,
                                   eval_metric="p30", min_child_rows=1)
    stopped.fit(X[:300], y[:300], party=None, passive=[], eval_set=[(X[300:], y[300:])],
                early_stopping_rounds=3)
    best = stopped.evals_result_["validation_0"]["p30"]
    assert stopped.best_score == pytest.approx(max(best))  # higher is better


def test_early_stopping_matches_xgboost_and_prunes_every_party() -> None:
    rng = np.random.default_rng(4)
    n = 500
    X = rng.integers(0, 12, size=(n, 4)).astype(float)
    y = 0.3 * X[:, 0] + rng.normal(0, 1.5, n)
    tr, va = slice(0, 350), slice(350, n)
    params = {"n_estimators": 60, "max_depth": 4, "learning_rate": 0.4, "max_bin": 16}
    reg = SecureBoostRegressor(**params, min_child_rows=1, insecure_plaintext=True)
    srv = SecureBoostPassive(insecure_plaintext=True, min_child_rows=1)
    seen: list[tuple[int, int, dict]] = []
    fit_local(reg, X[tr, :2], y[tr], {"media": (srv, X[tr, 2:])},
              eval_set=[(X[va, :2], y[va])], passive_eval={"media": [X[va, 2:]]},
              early_stopping_rounds=3, progress=lambda *a: seen.append(a))
    ref = xgb.XGBRegressor(tree_method="hist", early_stopping_rounds=3, **params)
    ref.fit(X[tr], y[tr], eval_set=[(X[va], y[va])], verbose=False)
    assert 0 < reg.best_iteration == ref.best_iteration < 20
    history = reg.evals_result_["validation_0"]["rmse"]
    np.testing.assert_allclose(history, ref.evals_result()["validation_0"]["rmse"], rtol=1e-5)
    assert len(history) == reg.best_iteration + 4 == len(seen)
    assert len(reg.model.trees) == len(srv.model.trees) == reg.best_iteration + 1
    used = {n.record for t in srv.model.trees for n in t if n.record >= 0}
    assert set(srv.model.records) == used
    assert reg.best_score == pytest.approx(min(history))
    t, n_trees, metrics = seen[-1]
    assert (t, n_trees) == (len(history) - 1, 60)
    assert set(metrics) == {"validation_0-rmse", "train-rmse"}
    margin = predict_local(reg, X[va, :2], {"media": (srv, X[va, 2:])})
    np.testing.assert_allclose(margin, ref.predict(X[va]), atol=2e-5)


def test_many_trees_that_need_no_messages_do_not_recurse() -> None:
    """Trees without passive columns (alone, or not sampled) run in a loop, not nested."""
    rng = np.random.default_rng(15)
    X = rng.normal(size=(200, 10))
    y = X[:, 0] + X[:, 9] + rng.normal(0, 0.1, 200)
    alone = SecureBoostRegressor(n_estimators=1500, max_depth=1, learning_rate=0.01,
                                 insecure_plaintext=True).fit(X, y, party=None, passive=[])
    assert len(alone.model.trees) == 1500
    reg = SecureBoostRegressor(n_estimators=1500, max_depth=1, learning_rate=0.01,
                               colsample_bytree=0.1, random_state=0, insecure_plaintext=True)
    srv = SecureBoostPassive(insecure_plaintext=True)
    fit_local(reg, X[:, :9], y, {"media": (srv, X[:, 9:])})
    owners = [t[0].owner for t in reg.model.trees]
    assert len(srv.model.trees) == 1500 and owners.count("media") > 50
    assert owners.count(ACTIVE) > 1000  # trees that ran without a message to 'media'


def test_eval_metrics_and_errors() -> None:
    own, media, y = _data(5)
    clf, srv = _pair({"eval_metric": "auc"})
    fit_local(clf, own[:300], y[:300], {"media": (srv, media[:300])},
              eval_set=[(own[300:], y[300:]), (own[:50], y[:50])],
              passive_eval={"media": [media[300:], media[:50]]})
    assert set(clf.evals_result_) == {"validation_0", "validation_1"}
    assert clf.evals_result_["validation_0"]["auc"][-1] > 0.9
    with pytest.raises(BoostError, match="early_stopping_rounds needs an eval_set"):
        clf.fit_protocol(ACTIVE, ["media"], own, y, early_stopping_rounds=3)
    clf2, srv2 = _pair()
    with pytest.raises(BoostError, match="eval sets"):  # the passive brought no eval set
        fit_local(clf2, own[:300], y[:300], {"media": (srv2, media[:300])},
                  eval_set=[(own[300:], y[300:])])


# --------------------------------------------------------------------------- privacy
def test_passive_thresholds_and_values_never_reach_the_active_party() -> None:
    own, media, y = _data(6, missing=0.05)
    clf, srv = _pair({"n_estimators": 6})
    log: list[Envelope] = []
    fit_local(clf, own, y, {"media": (srv, media)}, log=log)
    predict_local(clf, own, {"media": (srv, media)}, log=log)
    kinds = {e.kind for e in log}
    assert {"boost/hello", "boost/hist_reply", "boost/split_reply", "boost/predict_reply"} <= kinds
    blob = b"".join(bytes(e.payload) for e in log)
    screen = media["screen_time"].to_numpy()
    secrets = [r.threshold for r in srv.model.records.values()]
    secrets += list(screen[~np.isnan(screen)][::5])
    assert len(secrets) > 50
    for value in secrets:  # as 8-byte floats either way round, or as text
        assert struct.pack("<d", value) not in blob and struct.pack(">d", value) not in blob
        assert repr(value).encode() not in blob
    # the active party's model holds no passive threshold either
    for t in clf.model.trees:
        assert all(np.isnan(n.threshold) for n in t if n.owner == "media")


# ------------------------------------------------------------------------- bad input
def test_bad_input_is_reported_before_anything_is_sent() -> None:
    own, media, y = _data(7)
    clf, srv = _pair()
    bad = own.assign(city="Lyon")
    with pytest.raises(BoostError, match=r"non-numeric columns \['city'\]"):
        clf.fit_protocol(ACTIVE, ["media"], bad, y)
    with pytest.raises(BoostError, match=r"entirely missing.*\['age'\]"):
        srv.fit_protocol("media", ACTIVE, media.assign(age=np.nan))
    with pytest.raises(BoostError, match="binary labels 0/1"):
        clf.fit_protocol(ACTIVE, ["media"], own, y * 3)
    with pytest.raises(BoostError, match="400 rows"):
        clf.fit_protocol(ACTIVE, ["media"], own, y[:-1])
    with pytest.raises(BoostError, match="all one class"):
        clf.fit_protocol(ACTIVE, ["media"], own, np.ones(len(y)))
    with pytest.raises(BoostError, match="not trained"):
        clf.predict_protocol(ACTIVE, own)


def test_row_count_mismatch_stops_every_party() -> None:
    own, media, y = _data(8)
    clf, srv = _pair()
    protos = {ACTIVE: clf.fit_protocol(ACTIVE, ["media"], own, y),
              "media": srv.fit_protocol("media", ACTIVE, media[:-5])}
    with pytest.raises(BoostError, match=r"'media' has 395 rows, 'retailer' has 400.*PSI"):
        LocalNetwork(protos).run()
    assert not protos[ACTIVE].done and protos[ACTIVE].result is None


def test_passive_refuses_plaintext_unless_allowed() -> None:
    own, media, y = _data(10)
    clf, _ = _pair()
    strict = SecureBoostPassive(insecure_plaintext=False)
    with pytest.raises(BoostError, match=r"unencrypted gradients.*refuses"):
        fit_local(clf, own, y, {"media": (strict, media)})


# -------------------------------------------------------------- prediction rounds
def test_prediction_batches_and_mismatched_models() -> None:
    own, media, y = _data(11)
    clf, srv = _pair()
    fit_local(clf, own, y, {"media": (srv, media)})
    whole = predict_local(clf, own, {"media": (srv, media)})
    batched = predict_local(clf, own, {"media": (srv, media)}, batch_rows=24)
    np.testing.assert_array_equal(whole, batched)
    proba = 1 / (1 + np.exp(-whole))
    assert ((proba > 0.5) == y).mean() > 0.9
    with pytest.raises(BoostError, match="'media' has 399 rows"):
        predict_local(clf, own, {"media": (srv, media[:-1])})
    other_clf, other_srv = _pair()
    fit_local(other_clf, own, y, {"media": (other_srv, media)})
    with pytest.raises(BoostError, match="another model"):
        predict_local(clf, own, {"media": (other_srv, media)})
    with pytest.raises(BoostError, match="lacks the training columns"):
        predict_local(clf, own, {"media": (srv, media.drop(columns="age"))})


def test_inconsistent_leaf_masks_are_detected() -> None:
    own, media, y = _data(12)
    clf, srv = _pair()
    fit_local(clf, own, y, {"media": (srv, media)})
    tampered = PassiveModel.from_json(srv.model.to_json())
    for t in tampered.trees:  # forget its own splits: rows then reach several leaves
        for k, n in enumerate(t):
            t[k] = m.TreeNode(n.id, n.left, n.right, -1)
    srv.model_ = tampered
    with pytest.raises(ProtocolError, match="single out one leaf"):
        predict_local(clf, own, {"media": (srv, media)})


# ------------------------------------------------------------ misbehaving peers
def _env(sender: str, msg, to: str = "media") -> Envelope:
    return Envelope(sender, to, "s", m.kind(msg), 0, m.encode(msg))


def test_passive_rejects_messages_out_of_turn() -> None:
    _, media, _ = _data(13)
    srv = SecureBoostPassive(insecure_plaintext=True)
    proto = srv.fit_protocol("media", ACTIVE, media)
    assert proto.start() == []
    hist = m.HistRequest(0, 0, [], [0], [], [0], b"")
    with pytest.raises(ProtocolError, match="unexpected 'boost/hist'"):
        proto.on_message(_env(ACTIVE, hist))
    with pytest.raises(ProtocolError, match="only the active party"):
        proto.on_message(_env("operator", m.Finish(0)))
    setup = m.Setup(m.VERSION, "id", ["media"], 8, False, b"fedlab-boost-plaintext-v1", 3, 5, 1)
    (hello,) = proto.on_message(_env(ACTIVE, setup))
    assert isinstance(hello, Send) and hello.kind == "boost/hello"
    got = m.decode(Envelope("media", ACTIVE, "s", hello.kind, 0, bytes(hello.payload)))
    assert got.n_rows == len(media) and got.columns == list(media.columns)
    with pytest.raises(ProtocolError, match="out of turn"):
        proto.on_message(_env(ACTIVE, m.HistRequest(3, 0, [], [0], [], [0], b"")))
    with pytest.raises(ProtocolError, match="agreed to 5 trees of depth 3"):
        proto.on_message(_env(ACTIVE, m.HistRequest(5, 0, [], [0], [], [0], b"")))
    with pytest.raises(ProtocolError, match="agreed to 5 trees of depth 3"):
        proto.on_message(_env(ACTIVE, m.HistRequest(0, 3, [], [0], [], [0], b"")))
    with pytest.raises(ProtocolError, match="invalid columns"):
        proto.on_message(_env(ACTIVE, m.HistRequest(0, 0, [], [0], [], [7], b"")))
    (job,) = proto.on_message(_env(ACTIVE, m.HistRequest(0, 0, [], [0], [], [0, 1],
                                                         b"\0" * 16 * len(media))))
    assert isinstance(job, Compute)
    split = m.SplitRequest(0, 0, [m.Choice(0, 0, 7, False)])  # slot 7 of 8: empty (few values)
    proto.table[0, 7] = -1
    with pytest.raises(ProtocolError, match="invalid split"):
        proto.on_message(_env(ACTIVE, split))
    with pytest.raises(ProtocolError, match="malformed tree"):
        proto.on_message(_env(ACTIVE, m.TreeMsg(0, [m.TreeNode(0, 1, 2, -1)])))


def test_active_rejects_unexpected_replies() -> None:
    own, _, y = _data(14)
    clf, _ = _pair()
    proto = clf.fit_protocol(ACTIVE, ["media"], own, y)
    sends = proto.start()
    assert [s.kind for s in sends] == ["boost/setup"]
    with pytest.raises(ProtocolError, match="not a passive party"):
        proto.on_message(_env("operator", m.Hello(1, "x", 0, [], [], 1), ACTIVE))
    with pytest.raises(ProtocolError, match="unexpected 'boost/split_reply'"):
        proto.on_message(_env("media", m.SplitReply(0, 0, [], []), ACTIVE))
    assert isinstance(proto.model, ActiveModel) and not proto.done
