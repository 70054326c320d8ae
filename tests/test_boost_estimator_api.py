"""SecureBoost estimators follow scikit-learn's conventions (as XGBoost's do)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sklearn.base
import xgboost as xgb
from boost_workers import fit_local

from fedlab_kit.boost import (
    BoostError,
    SecureBoostClassifier,
    SecureBoostPassive,
    SecureBoostRegressor,
)


def test_clone_keeps_the_parameters() -> None:
    assert sklearn.base.clone(SecureBoostClassifier(n_estimators=7)).get_params()[
        "n_estimators"] == 7
    clf = SecureBoostClassifier(max_depth=3, early_stopping_rounds=5, insecure_plaintext=True)
    copy = sklearn.base.clone(clf)
    assert copy is not clf and copy.get_params() == clf.get_params()
    assert copy.get_params()["early_stopping_rounds"] == 5
    assert sklearn.base.clone(SecureBoostPassive(random_state=3)).random_state == 3


def test_set_params_changes_what_fit_uses() -> None:
    reg = SecureBoostRegressor(n_estimators=2)
    assert reg.set_params(n_estimators=4, max_depth=2) is reg
    assert reg.params.n_estimators == 4 and reg.params.max_depth == 2
    with pytest.raises(ValueError, match="Invalid parameter 'n_trees'"):
        reg.set_params(n_trees=3)


def test_the_constructor_stores_and_fit_checks() -> None:
    clf = SecureBoostClassifier(max_depth=0, insecure_plaintext=True)  # no error yet
    assert clf.max_depth == 0 and "max_depth=0" in repr(clf)
    with pytest.raises(BoostError, match=r"max_depth must be in 1\.\.20, got 0"):
        clf.fit(np.zeros((4, 1)), [0, 1, 0, 1], party=None, passive=[])


def test_early_stopping_rounds_in_the_constructor_stops_like_xgboost() -> None:
    rng = np.random.default_rng(4)
    X = rng.integers(0, 12, size=(500, 4)).astype(float)
    y = 0.3 * X[:, 0] + rng.normal(0, 1.5, 500)
    tr, va = slice(0, 350), slice(350, 500)
    params = {"n_estimators": 60, "max_depth": 4, "learning_rate": 0.4, "max_bin": 16}
    reg = SecureBoostRegressor(**params, early_stopping_rounds=3, min_child_rows=1,
                               insecure_plaintext=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        srv = SecureBoostPassive(insecure_plaintext=True, min_child_rows=1)
        fit_local(reg, X[tr, :2], y[tr], {"media": (srv, X[tr, 2:])},
                  eval_set=[(X[va, :2], y[va])], passive_eval={"media": [X[va, 2:]]})
    ref = xgb.XGBRegressor(tree_method="hist", early_stopping_rounds=3, **params)
    ref.fit(X[tr], y[tr], eval_set=[(X[va], y[va])], verbose=False)
    assert 0 < reg.best_iteration == ref.best_iteration < 20
    assert len(reg.model.trees) == reg.best_iteration + 1


def test_a_loaded_model_reports_its_parameters(tmp_path) -> None:
    X = np.random.default_rng(0).normal(size=(80, 2))
    clf = SecureBoostClassifier(n_estimators=3, max_depth=2, learning_rate=0.2,
                                insecure_plaintext=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, (X[:, 0] > 0).astype(int), party=None, passive=[])
    clf.save(tmp_path / "m.json")
    loaded = SecureBoostClassifier.load(tmp_path / "m.json")
    assert loaded.get_params()["learning_rate"] == 0.2 and loaded.n_estimators == 3
    np.testing.assert_allclose(loaded.predict_proba(X, party=None),
                               clf.predict_proba(X, party=None))
