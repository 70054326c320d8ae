"""``fedlab bench boost``: encrypted SecureBoost between party processes over a real relay.

Reports the AUC of the federated (BFV) model, of XGBoost trained centrally on all columns
with the same hyperparameters, and of XGBoost on the label holder's columns alone (what
federation adds), seconds per tree split into encrypt / histogram / decrypt / the rest
(communication, plaintext histograms of the label holder's own columns, split finding),
bytes sent, peak RSS per party (and the RSS of its HE worker pool), CPU seconds of each
party's process tree, and the feature holders' mask cache budget (``FEDLAB_MASK_CACHE_MB``).
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import resource
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from ..boost.bfv import mask_cache_mb
from ..demo.harness import RelayProcess, create_room
from ..net.identity import Identity, Invitation
from ..net.session import Party

ACTIVE = "retailer"
PASSIVES = ("media", "operator")


def make_data(shape: str, rows: int, features: int, seed: int = 7
              ) -> tuple[np.ndarray, np.ndarray]:
    """``a9a``: 32,561 x 123 one-hot census-like binary columns (14 categorical attributes);
    otherwise ``rows`` x ``features`` continuous columns with a non-linear label."""
    rng = np.random.default_rng(seed)
    if shape == "a9a":
        sizes = [9, 16, 7, 15, 6, 5, 2, 8, 5, 14, 11, 9, 10, 2]  # 119 one-hot + 4 flags
        cats = [rng.choice(k, 32_561, p=rng.dirichlet(np.ones(k))) for k in sizes]
        X = np.concatenate([np.eye(k)[c] for k, c in zip(sizes, cats, strict=True)]
                           + [(rng.random((32_561, 4)) < 0.1).astype(float)], axis=1)
        w = rng.normal(0, 1, X.shape[1])
        logit = X @ w + 1.5 * X[:, 3] * X[:, 20] - 1.0 * X[:, 40] * X[:, 60] - 1.0
    else:
        X = rng.normal(size=(rows, features))
        w = rng.normal(0, 1, features)
        logit = 3 * X @ w / np.sqrt(features) + 2 * np.sin(2 * X[:, 0]) + X[:, 1] * X[:, -1]
    y = (rng.random(len(X)) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


def split_columns(n_features: int, parties: int, shape: str) -> list[np.ndarray]:
    """Column indices per party, label holder first (a9a: 60 | 63)."""
    if shape == "a9a" and parties == 2:
        return [np.arange(60), np.arange(60, n_features)]
    return list(np.array_split(np.arange(n_features), parties))


def _timed(cls: type, methods: tuple[str, ...], spent: dict[str, float]) -> type:
    """A subclass of a backend whose ``methods`` add their wall time to ``spent``."""
    def wrap(name: str) -> Callable[..., Any]:
        inner = getattr(cls, name)

        def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return inner(self, *args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
        return timed
    return type(f"Timed{cls.__name__}", (cls,), {m: wrap(m) for m in methods})


def _party(role: str, key: str, invitation: str, data: dict[str, Any], params: dict[str, Any],
           out: Any, cluster: str | None = None) -> None:
    from ..boost import SecureBoostClassifier, SecureBoostPassive, bfv
    from ..boost import backend as backend_mod

    warnings.simplefilter("ignore")
    spent: dict[str, float] = {}
    timed_active = _timed(bfv.BfvActive, ("encrypt_nodes", "decrypt_histograms"), spent)
    timed_passive = _timed(bfv.BfvPassive, ("histograms",), spent)
    real = backend_mod.make_backends

    def make_backends(insecure_plaintext: bool, workers: Any = None) -> Any:
        b = real(insecure_plaintext)
        if insecure_plaintext:
            return b
        return backend_mod.Backends(functools.partial(timed_active, workers=workers),
                                    functools.partial(timed_passive, workers=workers), True)
    backend_mod.make_backends = make_backends  # type: ignore[assignment]
    import fedlab_kit.boost.estimator as est_mod
    import fedlab_kit.boost.passive as passive_mod
    est_mod.make_backends = make_backends  # type: ignore[attr-defined]
    passive_mod.make_backends = make_backends  # type: ignore[attr-defined]

    with Party(Identity.load(key), Invitation.from_string(invitation),
               cluster=cluster) as party:
        for p in party.peers:
            party.send(p, b"", kind="ready")
        for _ in party.peers:
            party.recv(kind="ready", timeout=300)
        t0 = time.monotonic()
        if role == ACTIVE:
            clf = SecureBoostClassifier(**params)
            tree_times: list[float] = []
            clf.fit(data["X"], data["y"], party=party, passive=data["passive"], timeout=3600,
                    progress=lambda t, n, m: tree_times.append(time.monotonic()))
            train_s = time.monotonic() - t0
            margin = clf.predict_margin(data["X_test"], party=party, timeout=3600)
            result: dict[str, Any] = {"margin": margin, "train_s": train_s,
                                      "n_trees": len(clf.model.trees)}
        else:
            srv = SecureBoostPassive(min_child_rows=params["min_child_rows"])
            srv.fit(data["X"], party=party, active=ACTIVE, timeout=3600)
            train_s = time.monotonic() - t0
            srv.predict(data["X_test"], party=party, active=ACTIVE, timeout=3600)
            result = {"train_s": train_s}
        party.flush(120)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        me = psutil.Process()
        cpu = sum(sum(p.cpu_times()[:2]) for p in [me, *me.children(recursive=True)])
        worker_rss = sum(p.memory_info().rss for p in me.children(recursive=True))
        out.put((role, {**result, "spent": spent, "bytes_sent": party.aio.bytes_sent,
                        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
                        "worker_rss_mb": round(worker_rss / 2**20, 1),
                        "cpu_seconds": round(cpu, 1)}))


def _train(X: np.ndarray, y: np.ndarray, cols: list[Any], names: list[str], n_train: int,
           params: dict[str, Any], cluster: str | None) -> dict[str, Any]:
    """One training and prediction, every party a process (on ``cluster`` if given)."""
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp, RelayProcess.start() as relay:
        inv, keys = create_room(names, Path(tmp), relay.host, relay.port, room="bench-boost")
        q = ctx.Queue()
        procs = []
        for name, c in zip(names, cols, strict=True):
            data = {"X": X[:n_train, c], "X_test": X[n_train:, c], "passive": names[1:]}
            if name == ACTIVE:
                data["y"] = y[:n_train]
            procs.append(ctx.Process(target=_party, args=(name, str(keys[name]),
                                                          inv.to_string(), data, params, q,
                                                          cluster)))
        for p in procs:
            p.start()
        res = dict(q.get(timeout=7200) for _ in procs)
        for p in procs:
            p.join(60)
    return res


def bench_boost(rows: int = 100_000, features: int = 40, parties: int = 2, trees: int = 10,
                depth: int = 5, bins: int = 32, shape: str = "default",
                seed: int = 7, min_child_rows: int = 20, cluster: str | None = None
                ) -> dict[str, Any]:
    """With ``cluster`` (e.g. "local:2", each party its own), the same training runs first
    on the process pools, then on the clusters; the report is the cluster run's, with the
    pools' seconds and their ratio."""
    import xgboost as xgb
    from sklearn.metrics import roc_auc_score

    if parties not in (2, 3):
        raise ValueError("parties must be 2 or 3")
    X, y = make_data(shape, rows, features, seed)
    cols = split_columns(X.shape[1], parties, shape)
    n_train = int(0.8 * len(X))
    params = {"n_estimators": trees, "max_depth": depth, "max_bin": bins,
              "learning_rate": 0.3, "min_child_rows": min_child_rows}
    names = [ACTIVE, *PASSIVES[: parties - 1]]
    pools = _train(X, y, cols, names, n_train, params, None) if cluster else None
    res = _train(X, y, cols, names, n_train, params, cluster)
    act = res[ACTIVE]
    y_test = y[n_train:]
    xgb_params = {k: v for k, v in params.items() if k != "min_child_rows"}
    xgb_params["tree_method"] = "hist"
    central = xgb.XGBClassifier(**xgb_params).fit(X[:n_train], y[:n_train])
    own = xgb.XGBClassifier(**xgb_params).fit(X[:n_train, cols[0]], y[:n_train])
    n_trees = max(1, act["n_trees"])
    encrypt = act["spent"].get("encrypt_nodes", 0.0)
    decrypt = act["spent"].get("decrypt_histograms", 0.0)
    histogram = sum(res[n]["spent"].get("histograms", 0.0) for n in names[1:])
    per_tree = act["train_s"] / n_trees
    return {
        "shape": shape, "rows": len(X), "train_rows": n_train, "features": X.shape[1],
        "features_per_party": {n: len(c) for n, c in zip(names, cols, strict=True)},
        "parties": parties, "trees": n_trees, "depth": depth, "bins": bins,
        "min_child_rows": min_child_rows,
        "auc_federated": round(float(roc_auc_score(y_test, act["margin"])), 4),
        "auc_centralized": round(float(roc_auc_score(
            y_test, central.predict_proba(X[n_train:])[:, 1])), 4),
        "auc_label_holder_only": round(float(roc_auc_score(
            y_test, own.predict_proba(X[n_train:, cols[0]])[:, 1])), 4),
        "seconds_per_tree": round(per_tree, 2),
        "seconds_per_tree_phases": {
            "encrypt": round(encrypt / n_trees, 2), "histogram": round(histogram / n_trees, 2),
            "decrypt": round(decrypt / n_trees, 2),
            "other": round(per_tree - (encrypt + histogram + decrypt) / n_trees, 2)},
        "train_seconds": round(act["train_s"], 1),
        "bytes_sent": {n: res[n]["bytes_sent"] for n in names},
        "peak_rss_mb": {n: res[n]["peak_rss_mb"] for n in names},
        "worker_rss_mb": {n: res[n]["worker_rss_mb"] for n in names},
        "cpu_seconds": {n: res[n]["cpu_seconds"] for n in names},
        "mask_cache_mb": mask_cache_mb(),
        "executor": cluster or "processpool",
        **({} if pools is None else {
            "processpool_seconds": round(pools[ACTIVE]["train_s"], 1),
            "ratio_vs_processpool": round(pools[ACTIVE]["train_s"] / act["train_s"], 3),
            "same_model_as_processpool": bool(np.allclose(pools[ACTIVE]["margin"],
                                                          act["margin"], atol=1e-9))}),
    }
