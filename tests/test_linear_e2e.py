"""Vertical logistic regression end to end: each party an OS process, over a relay process
on loopback, encrypted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import linear_workers
import numpy as np
import pytest
from party_processes import party_processes, run_parties

from fedlab_kit.linear import SecureLogisticPassive, SecureLogisticRegression
from fedlab_kit.protocol import LocalNetwork

pytestmark = [pytest.mark.e2e,
              pytest.mark.filterwarnings("ignore::fedlab_kit.linear.InsecurePlaintextWarning")]
LABEL = "retailer"


def _role(d: dict[str, Any]) -> str:
    return "label" if "y" in d else "feature"


def _dataset(n: int = 700, d: int = 6):
    rng = np.random.default_rng(8)
    X = rng.normal(size=(n, d)) * rng.uniform(1, 5, d)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ rng.normal(0, 0.5, d))))).astype(int)
    return X, y


def _split(X, y, cols, names, tr, te) -> dict[str, dict[str, Any]]:
    data = {names[0]: {"X": X[tr][:, cols[0]], "y": y[tr], "X_test": X[te][:, cols[0]],
                       "passive": list(names[1:])}}
    for name, c in zip(names[1:], cols[1:], strict=True):
        data[name] = {"X": X[tr][:, c], "X_test": X[te][:, c], "active": names[0]}
    return data


def _local_proba(data: dict[str, dict[str, Any]], max_iter: int) -> np.ndarray:
    names = list(data)
    clf = SecureLogisticRegression(max_iter=max_iter, insecure_plaintext=True)
    srvs = {n: SecureLogisticPassive(insecure_plaintext=True) for n in names[1:]}
    protos = {names[0]: clf.fit_protocol(names[0], names[1:], data[names[0]]["X"],
                                         data[names[0]]["y"])}
    protos |= {n: srvs[n].fit_protocol(n, names[0], data[n]["X"]) for n in names[1:]}
    LocalNetwork(protos).run()
    protos = {names[0]: clf.predict_protocol(data[names[0]]["X_test"])}
    protos |= {n: srvs[n].predict_protocol(names[0], data[n]["X_test"]) for n in names[1:]}
    z = LocalNetwork(protos).run()[names[0]]
    return np.stack([1 - 1 / (1 + np.exp(-z)), 1 / (1 + np.exp(-z))], axis=1)


def _run(tmp_path: Path, data: dict[str, dict[str, Any]], params: dict[str, Any]):
    results = run_parties(tmp_path, list(data), lambda n, key, inv, q: (
        linear_workers.linear_party, (key, inv, _role(data[n]), data[n], params, q)))
    return dict(results)


def test_three_parties_encrypted_over_the_relay_equal_the_plaintext_run(tmp_path: Path) -> None:
    X, y = _dataset()
    data = _split(X, y, [[0, 1], [2, 3], [4, 5]], [LABEL, "media", "operator"],
                  slice(0, 600), slice(600, 700))
    res = _run(tmp_path, data, {"max_iter": 6})
    assert all("error" not in r for r in res.values()), res
    np.testing.assert_allclose(res[LABEL]["proba"], _local_proba(data, 6), atol=1e-9)
    assert 2 <= res[LABEL]["n_iter"] == res["media"]["n_iter"] == res["operator"]["n_iter"] <= 6


def test_misaligned_rows_over_the_relay_stop_both_parties(tmp_path: Path) -> None:
    X, y = _dataset()
    data = _split(X, y, [[0, 1, 2], [3, 4, 5]], [LABEL, "media"], slice(0, 600),
                  slice(600, 700))
    data["media"]["X"] = data["media"]["X"][:590]
    res = _run(tmp_path, data, {"max_iter": 3, "insecure_plaintext": True})
    for name in (LABEL, "media"):
        assert "align the rows with PSI" in res[name]["error"], res[name]


def _iterations(q, names, until: int) -> None:
    seen = {n: -1 for n in names}
    while min(seen.values()) < until:
        kind, name, k = q.get(timeout=300)
        assert kind == "iteration"
        seen[name] = k


def test_encrypted_training_survives_a_relay_restart(tmp_path: Path) -> None:
    X, y = _dataset()
    data = _split(X, y, [[0, 1, 2], [3, 4, 5]], [LABEL, "media"], slice(0, 600),
                  slice(600, 700))
    params = {"max_iter": 8, "report": True}
    with party_processes(tmp_path, list(data), lambda n, key, inv, q: (
            linear_workers.linear_party, (key, inv, _role(data[n]), data[n], params, q))
            ) as (relay, q, procs):
        _iterations(q, list(data), 1)
        relay.kill()
        relay.restart()
        got: dict[str, Any] = {}
        while len(got) < 2:
            item = q.get(timeout=300)
            if item[0] != "iteration":
                got[item[0]] = item[1]
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
    assert all("error" not in r for r in got.values()), got
    assert got[LABEL]["reconnects"] >= 1
    np.testing.assert_allclose(got[LABEL]["proba"], _local_proba(data, 8), atol=1e-9)


def test_a_feature_holder_leaving_mid_training_stops_the_label_holder(tmp_path: Path) -> None:
    X, y = _dataset()
    data = _split(X, y, [[0, 1, 2], [3, 4, 5]], [LABEL, "media"], slice(0, 600),
                  slice(600, 700))
    # only the label holder reports: a process killed while it writes to a multiprocessing
    # queue may leave the queue's lock held, and the label holder's report would block forever
    params = {"max_iter": 10_000, "tol": 0.0, "timeout": 10, "report": [LABEL]}
    names = list(data)
    with party_processes(tmp_path, names, lambda n, key, inv, q: (
            linear_workers.linear_party, (key, inv, _role(data[n]), data[n], params, q))
            ) as (_, q, procs):
        _iterations(q, [LABEL], 2)
        procs[names.index("media")].kill()
        killed = time.time()
        while True:
            item = q.get(timeout=120)
            if item[0] == LABEL:
                break
    err = item[1]  # a killed process may come back ("lost"): the wait's timeout ends it
    assert err["type"] in ("TimeoutError", "PeerLost", "PeerAborted"), err
    assert "media" in err["error"] and "logistic regression training" in err["error"], err
    print(f"{LABEL} stopped {time.time() - killed:.1f} s after the kill: {err}")
