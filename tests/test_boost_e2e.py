"""SecureBoost end to end: each party an OS process, over a relay process on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boost_workers
import numpy as np
import pytest
from party_processes import party_processes, run_parties

from fedlab_kit.boost import SecureBoostClassifier

pytestmark = [pytest.mark.e2e,
              pytest.mark.filterwarnings("ignore::fedlab_kit.boost.InsecurePlaintextWarning")]
PARAMS = {"n_estimators": 6, "max_depth": 3, "max_bin": 16}


def _role(d: dict[str, Any]) -> str:
    return "active" if "y" in d else "passive"


def _run(tmp_path: Path, data: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return dict(run_parties(tmp_path, list(data), lambda n, key, inv, q: (
        boost_workers.boost_party, (key, inv, _role(data[n]), data[n], PARAMS, q))))


def _dataset(n: int = 300):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(n, 6))
    X[rng.random(X.shape) < 0.05] = np.nan
    y = (np.nan_to_num(X[:, 0] + X[:, 4] - X[:, 5]) + rng.normal(0, 0.5, n) > 0).astype(int)
    return X, y


def test_two_parties_over_the_relay_match_local_training(tmp_path: Path) -> None:
    X, y = _dataset()
    tr, va, te = slice(0, 200), slice(200, 250), slice(250, 300)
    data = {
        "retailer": {"X": X[tr, :3], "y": y[tr], "X_val": X[va, :3], "y_val": y[va],
                     "X_test": X[te, :3], "passive": ["media"]},
        "media": {"X": X[tr, 3:], "X_val": X[va, 3:], "X_test": X[te, 3:],
                  "active": "retailer"},
    }
    res = _run(tmp_path, data)
    central = SecureBoostClassifier(**PARAMS, insecure_plaintext=True)
    central.fit(X[tr], y[tr], party=None, passive=[], eval_set=[(X[va], y[va])])
    np.testing.assert_allclose(res["retailer"]["proba"],
                               central.predict_proba(X[te], party=None), atol=1e-12)
    assert res["retailer"]["trees"] == list(range(PARAMS["n_estimators"]))
    np.testing.assert_allclose(res["retailer"]["evals"]["validation_0"]["logloss"],
                               central.evals_result_["validation_0"]["logloss"], atol=1e-12)
    assert res["media"]["trees"] == PARAMS["n_estimators"] and res["media"]["records"] > 0


def test_bad_input_over_the_relay_stops_both_parties(tmp_path: Path) -> None:
    """Rows that do not match (seen by the label holder), then a column the feature holder
    cannot use (seen by itself): both parties end with the same explanation."""
    import pandas as pd

    X, y = _dataset()
    retailer = {"X": X[:200, :3], "y": y[:200], "X_val": X[200:, :3], "y_val": y[200:],
                "X_test": X[200:, :3], "passive": ["media"]}
    media = {"X": X[:190, 3:], "X_val": X[200:, 3:], "X_test": X[200:, 3:],
             "active": "retailer"}
    res = _run(tmp_path / "rows", {"retailer": retailer, "media": media})
    for name in ("retailer", "media"):
        assert "'media' has 190 rows, 'retailer' has 200" in res[name]["error"]
    frame = pd.DataFrame(X[:200, 3:], columns=["a", "b", "c"]).assign(city="Lyon")
    res = _run(tmp_path / "column", {"retailer": retailer, "media": {**media, "X": frame}})
    assert "non-numeric columns ['city']" in res["media"]["error"]
    assert res["retailer"]["type"] == "PeerAborted"  # told why, not left to time out
    assert "'media' stopped SecureBoost training" in res["retailer"]["error"]
    assert "['city']" in res["retailer"]["error"]


def test_encrypted_training_survives_a_relay_restart(tmp_path: Path) -> None:
    """The relay is SIGKILLed after the first tree and restarted: training resumes (the links
    replay what was lost) and the model equals one trained without interruption."""
    X, y = _dataset(400)
    params = {"n_estimators": 4, "max_depth": 3, "max_bin": 16}
    data = {"retailer": {"X": X[:300, :3], "y": y[:300], "X_test": X[300:, :3],
                         "passive": ["media"]},
            "media": {"X": X[:300, 3:], "X_test": X[300:, 3:], "active": "retailer"}}
    with party_processes(tmp_path, list(data), lambda n, key, inv, q: (
            boost_workers.boost_party_reporting,
            (key, inv, _role(data[n]), data[n], params, q))) as (relay, q, procs):
        assert q.get(timeout=300) == ("tree", 0)
        relay.kill()
        relay.restart()
        got: dict[str, Any] = {}
        trees = [0]
        while len(got) < 2:
            kind, value = q.get(timeout=300)
            if kind == "tree":
                trees.append(value)
            else:
                got[kind] = value
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
    assert trees == [0, 1, 2, 3] and got["media"]["trees"] == 4
    assert got["retailer"]["reconnects"] >= 1 and got["media"]["reconnects"] >= 1
    central = SecureBoostClassifier(**params, insecure_plaintext=True)
    central.fit(X[:300], y[:300], party=None, passive=[])
    np.testing.assert_allclose(got["retailer"]["proba"], central.predict_proba(X[300:],
                                                                               party=None),
                               atol=1e-6)
