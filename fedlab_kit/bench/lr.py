"""``fedlab bench lr``: encrypted vertical logistic regression between party processes over a
real relay.

Reports the AUC of the federated (BFV) model after ``epochs`` conjugate-gradient iterations
(each one pass over every row: an *epoch*), of scikit-learn's ``LogisticRegression`` trained
centrally on all columns with the same ``C``, and of the kit trained on the label holder's
columns alone; seconds per epoch, bytes sent, peak RSS and CPU seconds per party.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import psutil

from ..demo.harness import RelayProcess, create_room
from ..net.identity import Identity, Invitation
from ..net.session import Party
from .boost import ACTIVE, PASSIVES, make_data, split_columns


def _party(role: str, key: str, invitation: str, data: dict[str, Any], params: dict[str, Any],
           out: Any) -> None:
    from ..linear import SecureLogisticPassive, SecureLogisticRegression

    warnings.simplefilter("ignore")
    with Party(Identity.load(key), Invitation.from_string(invitation)) as party:
        for p in party.peers:
            party.send(p, b"", kind="ready")
        for _ in party.peers:
            party.recv(kind="ready", timeout=300)
        t0 = time.monotonic()
        if role == ACTIVE:
            clf = SecureLogisticRegression(**params)
            clf.fit(data["X"], data["y"], party=party, passive=data["passive"], timeout=3600)
            train_s = time.monotonic() - t0
            z = clf.decision_function(data["X_test"], party=party, timeout=3600)
            result: dict[str, Any] = {"z": z, "train_s": train_s, "n_iter": clf.n_iter_}
        else:
            srv = SecureLogisticPassive()
            srv.fit(data["X"], party=party, active=ACTIVE, timeout=3600)
            train_s = time.monotonic() - t0
            srv.predict(data["X_test"], party=party, active=ACTIVE, timeout=3600)
            result = {"train_s": train_s}
        party.flush(120)
        me = psutil.Process()
        out.put((role, {**result, "bytes_sent": party.aio.bytes_sent,
                        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF)
                                             .ru_maxrss / 1024, 1),
                        "cpu_seconds": round(sum(me.cpu_times()[:2]), 1)}))


def bench_lr(rows: int = 100_000, features: int = 40, parties: int = 2, epochs: int = 5,
             C: float = 1.0, shape: str = "default", seed: int = 7) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    from ..linear import SecureLogisticRegression

    if parties not in (2, 3):
        raise ValueError("parties must be 2 or 3")
    X, y = make_data(shape, rows, features, seed)
    cols = split_columns(X.shape[1], parties, shape)
    n_train = int(0.8 * len(X))
    names = [ACTIVE, *PASSIVES[: parties - 1]]
    params = {"C": C, "max_iter": epochs, "tol": 0.0}
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp, RelayProcess.start() as relay:
        inv, keys = create_room(names, Path(tmp), relay.host, relay.port, room="bench-lr")
        q = ctx.Queue()
        procs = []
        for name, c in zip(names, cols, strict=True):
            data = {"X": X[:n_train, c], "X_test": X[n_train:, c], "passive": names[1:]}
            if name == ACTIVE:
                data["y"] = y[:n_train]
            procs.append(ctx.Process(target=_party, args=(name, str(keys[name]),
                                                          inv.to_string(), data, params, q)))
        for p in procs:
            p.start()
        res = dict(q.get(timeout=7200) for _ in procs)
        for p in procs:
            p.join(60)
    act = res[ACTIVE]
    y_test = y[n_train:]
    scaler = StandardScaler().fit(X[:n_train])
    central = LogisticRegression(C=C, max_iter=5000).fit(scaler.transform(X[:n_train]),
                                                         y[:n_train])
    t0 = time.perf_counter()
    alone = SecureLogisticRegression(C=C, max_iter=epochs, tol=0.0, insecure_plaintext=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone.fit(X[:n_train, cols[0]], y[:n_train], party=None, passive=[])
        own_z = alone.decision_function(X[n_train:, cols[0]], party=None)
    plain_s = time.perf_counter() - t0
    n_iter = max(1, act["n_iter"])
    return {
        "shape": shape, "rows": len(X), "train_rows": n_train, "features": X.shape[1],
        "features_per_party": {n: len(c) for n, c in zip(names, cols, strict=True)},
        "parties": parties, "epochs": n_iter, "C": C,
        "auc_federated": round(float(roc_auc_score(y_test, act["z"])), 4),
        "auc_centralized": round(float(roc_auc_score(
            y_test, central.decision_function(scaler.transform(X[n_train:])))), 4),
        "auc_label_holder_only": round(float(roc_auc_score(y_test, own_z)), 4),
        # iteration 0 (the gradient at zero) plus one iteration per epoch
        "seconds_per_epoch": round(act["train_s"] / (n_iter + 1), 2),
        "train_seconds": round(act["train_s"], 1),
        "label_holder_alone_plaintext_seconds": round(plain_s, 2),
        "bytes_sent": {n: res[n]["bytes_sent"] for n in names},
        "peak_rss_mb": {n: res[n]["peak_rss_mb"] for n in names},
        "cpu_seconds": {n: res[n]["cpu_seconds"] for n in names},
    }
