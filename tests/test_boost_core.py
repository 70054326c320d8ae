"""SecureBoost building blocks: parameters, binning, histogram kernel, split scoring, wire."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.metrics import roc_auc_score

from fedlab_kit.boost import (
    BoostError,
    BoostParams,
    InsecurePlaintextWarning,
    PlaintextActive,
    PlaintextPassive,
    SecureBoostClassifier,
    SecureBoostPassive,
    SecureBoostRegressor,
    make_backends,
)
from fedlab_kit.boost import messages as m
from fedlab_kit.boost.backend import histogram_sums, node_histograms
from fedlab_kit.boost.binning import (
    MISSING,
    apply_edges,
    as_matrix,
    bin_matrix,
    canonical_threshold,
    codes_left,
    fit_edges,
    goes_left,
    slot_table,
    threshold_value,
)
from fedlab_kit.boost.params import LOGISTIC, SQUARED, auc, check_labels
from fedlab_kit.boost.tree import RT_EPS, best_splits
from fedlab_kit.errors import FedlabError, ProtocolError
from fedlab_kit.protocol import Envelope


# ------------------------------------------------------------------ parameters, input
@pytest.mark.parametrize(("name", "value"), [
    ("n_estimators", 0), ("n_estimators", 2.5), ("max_depth", 0), ("max_depth", 99),
    ("max_bin", 1), ("max_bin", 256), ("learning_rate", 0.0), ("learning_rate", float("nan")),
    ("min_child_weight", -1.0), ("reg_lambda", -0.1), ("gamma", -1.0), ("subsample", 0.0),
    ("subsample", 1.5), ("colsample_bytree", 0.0), ("random_state", -3),
    ("base_score", 1.0), ("eval_metric", "rmse"),
])
def test_bad_hyperparameters_are_named(name: str, value: object) -> None:
    """As in scikit-learn, the constructor stores; fit (here its protocol) checks."""
    clf = SecureBoostClassifier(**{name: value}, insecure_plaintext=True)
    assert clf.get_params()[name] is value
    with pytest.raises(BoostError, match=name):
        clf.fit_protocol("retailer", [], np.zeros((4, 1)), [0, 1, 0, 1])
    assert issubclass(BoostError, FedlabError)


def test_good_hyperparameters_round_trip() -> None:
    p = BoostParams(SQUARED, 7, 3, 0.1, 64, 0.5, 2.0, 0.1, 0.8, 0.5, 3, 1.5, "mae")
    assert BoostParams.from_dict(p.to_dict()) == p
    assert p.metric == "mae" and BoostParams().metric == "logloss"


def test_insecure_plaintext_must_be_explicit() -> None:
    with pytest.raises(BoostError, match="insecure_plaintext"):
        _ = SecureBoostRegressor(insecure_plaintext="yes").params  # type: ignore[arg-type]
    with pytest.raises(BoostError, match="insecure_plaintext"):
        SecureBoostPassive(insecure_plaintext=1.5).fit_protocol(  # type: ignore[arg-type]
            "media", "retailer", np.zeros((4, 1)))
    with pytest.warns(InsecurePlaintextWarning, match="UNENCRYPTED"):
        backends = make_backends(True)
    assert backends.secure is False and backends.active is PlaintextActive


@pytest.mark.parametrize(("y", "n", "match"), [
    ([0, 1, np.nan, 1], 4, "missing"), ([0, 1, 2, 1], 4, r"0/1.*\[2\.0\]"),
    ([0, 1, 1], 4, "3 labels"), ([], None, "empty"), (["a", "b"], 2, "numeric"),
])
def test_bad_labels(y: list, n: int | None, match: str) -> None:
    with pytest.raises(BoostError, match=match):
        check_labels(LOGISTIC, y, n)


def test_regression_labels_may_be_any_number() -> None:
    assert check_labels(SQUARED, [0.5, -3, 1e6], 3).tolist() == [0.5, -3, 1e6]


def test_matrix_errors_name_the_columns() -> None:
    frame = pd.DataFrame({"age": [1, 2, 3], "city": ["x", "y", "z"], "income": [1.0, 2, 3]})
    with pytest.raises(BoostError, match=r"non-numeric columns \['city'\]"):
        as_matrix(frame)
    frame = pd.DataFrame({"age": [1, 2, 3], "empty": [np.nan] * 3})
    with pytest.raises(BoostError, match=r"entirely missing.*\['empty'\]"):
        as_matrix(frame)
    with pytest.raises(BoostError, match=r"infinite.*\['f1'\]"):
        as_matrix(np.array([[1.0, np.inf], [2.0, 3.0]]))
    with pytest.raises(BoostError, match="2-dimensional"):
        as_matrix(np.arange(3.0))
    with pytest.raises(BoostError, match=r"non-numeric columns \['f0'\]"):
        as_matrix(np.array([["a", 1], ["b", 2]], dtype=object))
    mat, cols = as_matrix(pd.DataFrame({"a": pd.array([1, None, 3], dtype="Int64"),
                                        "b": [True, False, True]}))
    assert cols == ["a", "b"] and np.isnan(mat[1, 0]) and mat[:, 1].tolist() == [1, 0, 1]


# ----------------------------------------------------------------------- binning
@pytest.mark.parametrize("max_bin", [8, 16, 32, 64])
def test_edges_are_xgboost_cuts(max_bin: int) -> None:
    """Where XGBoost's quantile sketch is exact (up to a few times max_bin distinct
    values), its cut points and ours select the same values."""
    rng = np.random.default_rng(max_bin)
    X = np.stack([rng.integers(0, 3 * max_bin, 1500), rng.integers(-max_bin, max_bin, 1500),
                  rng.integers(0, 5, 1500) / 4], axis=1).astype(float)
    indptr, values = xgb.QuantileDMatrix(X, max_bin=max_bin).get_quantile_cut()
    for j in range(X.shape[1]):
        cuts = values[indptr[j] + 1 : indptr[j + 1] - 1]  # without the min and max guards
        ours = np.nextafter(fit_edges(X[:, j], max_bin), np.inf)
        assert len(ours) <= max_bin - 1
        np.testing.assert_array_equal(ours.astype(np.float32), cuts)


def test_codes_and_raw_thresholds_agree() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 3))
    X[:, 1] = rng.integers(0, 5, 500)
    X[rng.random(X.shape) < 0.1] = np.nan
    codes, edges = bin_matrix(X, 16)
    assert codes.dtype == np.uint8 and (codes[np.isnan(X)] == MISSING).all()
    assert codes[~np.isnan(X)].max() < 16 and len(np.unique(codes[:, 1])) == 6  # 5 + NaN
    new = rng.normal(size=(300, 3)) * 2  # unseen values, outside the training range too
    new[rng.random(new.shape) < 0.1] = np.nan
    new_codes = apply_edges(new, edges)
    for j in range(3):
        for t in range(len(edges[j]) + 1):
            thr = threshold_value(edges[j], t)
            for left in (False, True):
                np.testing.assert_array_equal(codes_left(codes[:, j], t, left),
                                              goes_left(X[:, j], thr, left))
                np.testing.assert_array_equal(codes_left(new_codes[:, j], t, left),
                                              goes_left(new[:, j], thr, left))


def test_slot_table_shuffles_each_column_with_slot_zero_first() -> None:
    edges = [np.arange(5.0), np.arange(2.0), np.arange(0.0)]
    plain = slot_table(edges, 8)
    assert plain.tolist() == [[5, 0, 1, 2, 3, 4, -1, -1], [2, 0, 1, -1, -1, -1, -1, -1],
                              [0, -1, -1, -1, -1, -1, -1, -1]]
    shuffled = slot_table(edges, 8, np.random.default_rng(4))
    assert (shuffled[:, 0] == plain[:, 0]).all()
    assert sorted(shuffled[0, 1:6]) == [0, 1, 2, 3, 4] and shuffled[0, 1:6].tolist() != [0, 1, 2,
                                                                                         3, 4]


def test_the_shuffle_does_not_hide_the_threshold_order_from_the_label_holder() -> None:
    """What the README states: hessians are positive, so a column's cumulative H sums grow
    with the threshold, and the label holder sorts the shuffled candidates back into their
    true order from one node's sums. The shuffle is kept (it costs nothing) but claimed
    as no protection; it is drawn once per training, so the root's masks recur."""
    rng = np.random.default_rng(8)
    X = rng.normal(size=(2000, 3))
    codes, edges = bin_matrix(X, 16)
    thr = slot_table(edges, 16, rng)
    g, h = rng.normal(size=2000), rng.random(2000) * 0.25 + 1e-3
    (hist,) = node_histograms(g, h, [np.arange(2000)], codes, thr)
    for f in range(3):
        real = np.flatnonzero(thr[f] >= 0)
        recovered = real[np.argsort(hist[f, real, 1])]  # slots by growing H sum
        assert (thr[f, recovered] == np.arange(len(real))).all()  # the true order


def test_canonical_threshold_picks_xgboost_bound() -> None:
    codes = np.array([0, 3, 3, 7, MISSING], dtype=np.uint8)
    assert canonical_threshold(codes, 5, default_left=False) == 3  # smallest equivalent
    assert canonical_threshold(codes, 5, default_left=True) == 6  # largest equivalent
    assert canonical_threshold(codes, 0, default_left=False) == 0


# ------------------------------------------------------------ histograms and splits
def _brute_histograms(g, h, nodes, codes, thr):
    out = np.zeros((len(nodes), codes.shape[1], thr.shape[1], 2))
    for i, rows in enumerate(nodes):
        for f in range(codes.shape[1]):
            for s in range(thr.shape[1]):
                t = thr[f, s]
                sel = rows[(codes[rows, f] != MISSING) & (codes[rows, f] <= t)] if t >= 0 else []
                out[i, f, s] = g[sel].sum(), h[sel].sum()
    return out


def test_histogram_kernel_matches_brute_force() -> None:
    rng = np.random.default_rng(2)
    n = 200
    X = rng.normal(size=(n, 4))
    X[rng.random(X.shape) < 0.15] = np.nan
    codes, edges = bin_matrix(X, 8)
    thr = slot_table(edges, 8, rng)
    g, h = rng.normal(size=n), rng.random(n)
    nodes = [np.sort(rng.choice(n, 50, replace=False)), np.arange(n), np.array([], np.int64)]
    got = node_histograms(g, h, nodes, codes, thr)
    np.testing.assert_allclose(got, _brute_histograms(g, h, nodes, codes, thr), atol=1e-12)
    assert got[2].sum() == 0 and np.abs(got[0]).sum() > 0
    assert histogram_sums(np.zeros((0, 2)), [], codes[:0], thr).shape == (0, 4, 8, 2)


def test_plaintext_backend_round_trip_and_checks() -> None:
    rng = np.random.default_rng(3)
    codes, edges = bin_matrix(rng.normal(size=(60, 3)), 6)
    thr = slot_table(edges, 6, rng)
    g, h = rng.normal(size=60), rng.random(60)
    nodes = [np.arange(0, 60, 2), np.arange(1, 30)]
    active = PlaintextActive()
    passive = PlaintextPassive(active.setup_payload())
    reply = passive.histograms(active.encrypt_nodes(g, h, nodes), nodes, codes, thr)
    np.testing.assert_array_equal(active.decrypt_histograms(reply, 2, 3, 6),
                                  node_histograms(g, h, nodes, codes, thr))
    with pytest.raises(ProtocolError, match="bytes"):
        active.decrypt_histograms(reply[:-8], 2, 3, 6)
    with pytest.raises(ProtocolError, match="bytes"):
        passive.histograms(b"\0" * 8, nodes, codes, thr)
    with pytest.raises(ProtocolError, match="plaintext"):
        PlaintextPassive(b"ckks-keys")


def _brute_best(g, h, codes, lam, mcw):
    """Best gain over all thresholds and both missing directions, by direct sums."""
    best = (0.0, None)
    G, H = g.sum(), h.sum()

    def score(a, b):
        return a * a / (b + lam)

    for f in range(codes.shape[1]):
        miss = codes[:, f] == MISSING
        for t in range(int(codes[~miss, f].max()) + 1):
            for left in (False, True):
                if left and not miss.any():
                    continue
                go = codes_left(codes[:, f], t, left)
                hl, hr = h[go].sum(), h[~go].sum()
                if hl < mcw or hr < mcw or not (go & ~miss).any() or go.all():
                    continue
                gain = score(g[go].sum(), hl) + score(G - g[go].sum(), hr) - score(G, H)
                if gain > best[0] + 1e-12:
                    best = (gain, (f, t, left))
    return best


@pytest.mark.parametrize("seed", range(4))
def test_best_split_matches_exhaustive_search(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 120
    X = rng.normal(size=(n, 3))
    X[rng.random(X.shape) < 0.2] = np.nan
    codes, edges = bin_matrix(X, 10)
    thr = slot_table(edges, 10, rng)
    g = rng.normal(size=n) + np.nan_to_num(X[:, 0]).clip(-1, 1) * (seed % 2)
    h = rng.random(n) + 0.1
    p = BoostParams(min_child_weight=2.0, reg_lambda=1.0)
    hist = node_histograms(g, h, [np.arange(n)], codes, thr)
    (split,) = best_splits(hist, np.array([[g.sum(), h.sum()]]), p)
    want_gain, (f, t, left) = _brute_best(g, h, codes, 1.0, 2.0)
    assert split is not None and split.gain == pytest.approx(want_gain, rel=1e-9)
    got = codes_left(codes[:, split.feature], int(thr[split.feature, split.slot]),
                     split.default_left)
    np.testing.assert_array_equal(got, codes_left(codes[:, f], t, left))


def test_no_split_below_gamma_or_min_child_weight() -> None:
    codes = np.array([[0], [0], [1], [1]], dtype=np.uint8)
    g, h = np.array([-1.0, -1, 1, 1]), np.ones(4)
    thr = slot_table([np.array([0.5])], 4)
    hist = node_histograms(g, h, [np.arange(4)], codes, thr)
    totals = np.array([[0.0, 4.0]])
    (s,) = best_splits(hist, totals, BoostParams(reg_lambda=0.0))
    assert s is not None and s.gain == pytest.approx(4.0) and s.slot == 1  # 2 + 2 - 0
    assert best_splits(hist, totals, BoostParams(reg_lambda=0.0, gamma=4.5)) == [None]
    assert best_splits(hist, totals, BoostParams(reg_lambda=0.0, min_child_weight=2.5)) == [None]
    assert best_splits(np.zeros((1, 1, 4, 2)), np.array([[0.0, 4.0]]), BoostParams()) == [None]
    assert RT_EPS == 1e-6


# ---------------------------------------------------------------------- metrics, wire
def test_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 400).astype(float)
    score = np.round(rng.random(400) + 0.3 * y, 1)  # many ties
    assert auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert np.isnan(auc(np.ones(3), np.arange(3.0)))


def test_masks_and_messages() -> None:
    mask = np.random.default_rng(6).random((3, 13)) < 0.5
    np.testing.assert_array_equal(m.unbits(m.bits(mask), (3, 13), "p"), mask)
    with pytest.raises(ProtocolError, match="mask"):
        m.unbits(m.bits(mask), (3, 14 + 8), "p")
    msg = m.SplitRequest(1, 2, [m.Choice(5, 3, 7, True)])
    env = Envelope("a", "b", "s", m.kind(msg), 0, m.encode(msg))
    assert m.decode(env) == msg and env.kind == "boost/split"
    with pytest.raises(ProtocolError, match="malformed"):
        m.decode(Envelope("a", "b", "s", "boost/split", 0, b"\x93\x01"))
    with pytest.raises(ProtocolError, match="unexpected message"):
        m.decode(Envelope("a", "b", "s", "psi/hello", 0, b""))


def test_local_training_needs_no_party_but_warns_about_plaintext() -> None:
    X = np.random.default_rng(7).normal(size=(50, 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg = SecureBoostRegressor(n_estimators=3, insecure_plaintext=True)
        reg.fit(X, X[:, 0], party=None, passive=[])
    assert any(issubclass(w.category, InsecurePlaintextWarning) for w in caught)
    assert len(reg.model.trees) == 3
    with pytest.raises(BoostError, match="pass the Party"), warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecurePlaintextWarning)
        SecureBoostRegressor(insecure_plaintext=True).fit(X, X[:, 0], party=None,
                                                          passive=["media"])
