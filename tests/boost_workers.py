"""SecureBoost test helpers: in-memory runs (LocalNetwork) and party processes (spawned)."""

from __future__ import annotations

import warnings
from collections.abc import Hashable
from typing import Any

import numpy as np

from fedlab_kit.protocol import Action, Envelope, LocalNetwork, Protocol

ACTIVE = "retailer"


class Recorder(Protocol):
    """Wraps a protocol and keeps every envelope it receives."""

    def __init__(self, inner: Protocol, log: list[Envelope]) -> None:  # no super(): mirrors
        self.inner, self.log = inner, log
        self.name = inner.name

    @property
    def done(self) -> bool:  # type: ignore[override]
        return self.inner.done

    @property
    def result(self) -> Any:  # type: ignore[override]
        return self.inner.result

    def start(self) -> list[Action]:
        return self.inner.start()

    def on_message(self, env: Envelope) -> list[Action]:
        self.log.append(env)
        return self.inner.on_message(env)

    def on_computed(self, key: Hashable, result: Any) -> list[Action]:
        return self.inner.on_computed(key, result)


def fit_local(est: Any, X: Any, y: Any, passives: dict[str, tuple[Any, Any]], *,
              eval_set: list[tuple[Any, Any]] | None = None,
              passive_eval: dict[str, list[Any]] | None = None,
              early_stopping_rounds: int | None = None, progress: Any = None,
              log: list[Envelope] | None = None) -> dict[str, Any]:
    """Train ``est`` (the label holder) with ``passives`` ({name: (estimator, X)})."""
    protos: dict[str, Protocol] = {ACTIVE: est.fit_protocol(
        ACTIVE, list(passives), X, y, eval_set=eval_set,
        early_stopping_rounds=early_stopping_rounds, progress=progress)}
    for name, (srv, Xp) in passives.items():
        protos[name] = srv.fit_protocol(name, ACTIVE, Xp,
                                        eval_set=(passive_eval or {}).get(name))
    if log is not None:
        protos[ACTIVE] = Recorder(protos[ACTIVE], log)
    return LocalNetwork(protos).run()


def predict_local(est: Any, X: Any, passives: dict[str, tuple[Any, Any]],
                  log: list[Envelope] | None = None, **kwargs: Any) -> np.ndarray:
    """One federated prediction round in memory; the active party's margins."""
    protos: dict[str, Protocol] = {ACTIVE: est.predict_protocol(ACTIVE, X, **kwargs)}
    for name, (srv, Xp) in passives.items():
        protos[name] = srv.predict_protocol(name, ACTIVE, Xp)
    if log is not None:
        protos[ACTIVE] = Recorder(protos[ACTIVE], log)
    return LocalNetwork(protos).run()[ACTIVE]


# ------------------------------------------------------------ party processes (e2e)
def boost_party(key: str, invitation: str, role: str, data: dict[str, Any],
                params: dict[str, Any], out: Any) -> None:
    """Train over the relay, then serve/run one prediction round; report to ``out``."""
    from fedlab_kit import Identity, Invitation, Party
    from fedlab_kit.boost import SecureBoostClassifier, SecureBoostPassive
    from fedlab_kit.errors import FedlabError

    warnings.simplefilter("ignore")
    with Party(Identity.load(key), Invitation.from_string(invitation)) as party:
        try:
            if role == "active":
                clf = SecureBoostClassifier(**params, insecure_plaintext=True)
                trees: list[int] = []
                clf.fit(data["X"], data["y"], party=party, passive=data["passive"],
                        eval_set=[(data["X_val"], data["y_val"])], timeout=120,
                        progress=lambda t, n, metrics: trees.append(t))
                proba = clf.predict_proba(data["X_test"], party=party, timeout=120)
                out.put((party.name, {"proba": proba, "trees": trees,
                                      "evals": clf.evals_result_}))
            else:
                srv = SecureBoostPassive(insecure_plaintext=True)
                srv.fit(data["X"], party=party, active=data["active"],
                        eval_set=[data["X_val"]], timeout=120)
                srv.predict(data["X_test"], party=party, active=data["active"], timeout=120)
                out.put((party.name, {"records": len(srv.model.records),
                                      "trees": len(srv.model.trees)}))
        except FedlabError as exc:
            out.put((party.name, {"error": str(exc), "type": type(exc).__name__}))


def boost_party_reporting(key: str, invitation: str, role: str, data: dict[str, Any],
                          params: dict[str, Any], out: Any) -> None:
    """Encrypted training that reports each finished tree to ``out`` as ("tree", t)."""
    from fedlab_kit import Identity, Invitation, Party
    from fedlab_kit.boost import SecureBoostClassifier, SecureBoostPassive

    with Party(Identity.load(key), Invitation.from_string(invitation)) as party:
        if role == "active":
            clf = SecureBoostClassifier(**params)
            clf.fit(data["X"], data["y"], party=party, passive=data["passive"], timeout=300,
                    progress=lambda t, n, metrics: out.put(("tree", t)))
            proba = clf.predict_proba(data["X_test"], party=party, timeout=300)
            out.put((party.name, {"proba": proba, "reconnects": party.aio.reconnects}))
        else:
            srv = SecureBoostPassive()
            srv.fit(data["X"], party=party, active=data["active"], timeout=300)
            srv.predict(data["X_test"], party=party, active=data["active"], timeout=300)
            out.put((party.name, {"trees": len(srv.model.trees),
                                  "reconnects": party.aio.reconnects}))
