"""Party processes for the end-to-end tests of stopping: refusals, departures, restarts."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from fedlab_kit import Identity, Invitation, Party

PEER_TIMEOUT = 120.0  # what a peer would wait without an abort


def _wait_for_peers(party: Party, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while any(v != "present" for v in party.presence.values()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"peers not all present: {party.presence}")
        time.sleep(0.05)


def _job(job: str, party: Party, refuse: bool, workdir: str) -> Any:
    """One party's side of ``job``; the refusing party brings input it must refuse."""
    if job in ("psi", "psi2"):  # psi2: two parties, so KKRT (the default there)
        ids = [f"id{i}" for i in range(300)] + (["id0"] if refuse else [])
        return party.psi(ids, workers=1, timeout=PEER_TIMEOUT).size
    if job == "boost":
        from fedlab_kit.boost import SecureBoostClassifier, SecureBoostPassive

        rng = np.random.default_rng(1)
        X = rng.normal(size=(200, 2))
        if party.name == "retailer":
            y = (X[:, 0] > 0).astype(float)
            if refuse:
                y[5] = np.nan  # a label the label holder must refuse
            clf = SecureBoostClassifier(n_estimators=2, max_depth=2, insecure_plaintext=True)
            clf.fit(X, y, party=party, passive=[p for p in party.peers], timeout=PEER_TIMEOUT)
            return len(clf.model.trees)
        srv = SecureBoostPassive(insecure_plaintext=True)
        srv.fit(X, party=party, active="retailer", timeout=PEER_TIMEOUT)
        return len(srv.model.trees)
    if job == "counts":
        import pandas as pd

        from fedlab_kit.analytics import joint_crowd
        from fedlab_kit.dp import PrivacyLedger

        persons = [f"u{i}" for i in range(300)]
        if party.name == "retailer":
            cells = joint_crowd.crowd_for_labels(party, [i % 2 for i in range(300)],
                                                 visit_holder="operator", timeout=PEER_TIMEOUT)
            return len(cells)
        ledger = PrivacyLedger(Path(workdir) / f"{party.name}.sqlite",
                               total_epsilon=0.5 if refuse else 2.0, party=party.name)
        visits = pd.DataFrame({"user_id": persons, "h3": [f"c{i % 3}" for i in range(300)]})
        return joint_crowd.crowd_for_visits(party, persons, visits, ledger=ledger, epsilon=1.0,
                                            keys=["c0", "c1", "c2"], label_holder="retailer",
                                            timeout=PEER_TIMEOUT)["persons"]
    raise ValueError(job)


def stopping_party(name: str, key: str, invitation: str, job: str, refuser: str,
                   workdir: str, hold: Any, out: Any) -> None:
    """Run ``job``; report (name, error type, message, time.time() of the end). The refusing
    party then stays in the room (as a notebook kernel does) until ``hold`` is set."""
    warnings.simplefilter("ignore")
    with Party(Identity.load(key), Invitation.from_string(invitation)) as party:
        _wait_for_peers(party)
        try:
            result = _job(job, party, name == refuser, workdir)
            out.put((name, "ok", str(result), time.time()))
        except Exception as exc:
            out.put((name, type(exc).__name__, str(exc), time.time()))
        hold.wait(120)


def psi_twice(name: str, key: str, invitation: str, n_ids: int, out: Any,
              tries: int = 3) -> None:
    """Run PSI until it succeeds (a peer's restart stops a try); report each try's end."""
    warnings.simplefilter("ignore")
    ids = [f"id{i}" for i in range(n_ids)]
    with Party(Identity.load(key), Invitation.from_string(invitation)) as party:
        out.put((name, "joined", "", time.time()))
        for _ in range(tries):
            try:
                res = party.psi(ids, workers=1, timeout=PEER_TIMEOUT, batch=512)
                out.put((name, "ok", str(res.size), time.time()))
                return
            except Exception as exc:
                out.put((name, type(exc).__name__, str(exc), time.time()))
