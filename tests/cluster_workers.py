"""Party processes on a Dask cluster, for tests/test_cluster.py."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import numpy as np

from fedlab_kit import Identity, Invitation, Party


def psi_on(key: str, invitation: str, ids: list[Any], cluster: str | None, out: Any) -> None:
    with Party(Identity.load(key), Invitation.from_string(invitation), cluster=cluster) as party:
        kind = party.workers.kind if party.workers is not None else "default"
        res = party.psi(ids, session="psi-cluster")
        out.put((party.name, {"aligned": [ids[i] for i in res.rows], "kind": kind}))


def _kill_a_worker(party: Party) -> None:
    """SIGKILL one of the party's Dask worker processes (its nanny starts a new one)."""
    client = party.workers.client  # type: ignore[union-attr]
    pids = client.run(os.getpid)
    os.kill(sorted(pids.values())[0], signal.SIGKILL)


def boost_on(role: str, key: str, invitation: str, data: dict[str, Any], cluster: str | None,
             kill_after_tree: int | None, out: Any) -> None:
    """Train (``role`` "active") or serve (else) a small encrypted SecureBoost; with
    ``kill_after_tree``, one Dask worker of this party is killed while the next tree's jobs
    run.
    An error is reported as ``{"error": type, "message": text}``."""
    try:
        _boost_on(role, key, invitation, data, cluster, kill_after_tree, out)
    except Exception as exc:
        out.put((role, {"error": type(exc).__name__, "message": str(exc)}))


def _boost_on(role: str, key: str, invitation: str, data: dict[str, Any], cluster: str | None,
              kill_after_tree: int | None, out: Any) -> None:
    from fedlab_kit.boost import SecureBoostClassifier, SecureBoostPassive

    params = {"n_estimators": 3, "max_depth": 3, "max_bin": 16, "learning_rate": 0.3}
    with Party(Identity.load(key), Invitation.from_string(invitation), cluster=cluster) as party:
        killed = threading.Event()

        def on_tree(t: int, *_: Any) -> None:
            out.put(("tree", t))
            if kill_after_tree is not None and t + 1 >= kill_after_tree and not killed.is_set():
                killed.set()  # half a second into the next tree's histogram jobs
                threading.Timer(0.5, _kill_a_worker, (party,)).start()

        if role == "active":
            clf = SecureBoostClassifier(**params)
            clf.fit(data["X"], data["y"], party=party, passive=data["passive"], timeout=600,
                    progress=lambda t, n, m: on_tree(t))
            margin = clf.predict_margin(data["X"], party=party, timeout=600)
            out.put((role, {"margin": np.asarray(margin).tolist(),
                                  "killed": killed.is_set()}))
        else:
            srv = SecureBoostPassive()
            srv.fit(data["X"], party=party, active=data["active"], timeout=600,
                    progress=lambda t, _s: on_tree(t - 1))
            srv.predict(data["X"], party=party, active=data["active"], timeout=600)
            out.put((role, {"splits": len(srv.model.records), "killed": killed.is_set()}))
