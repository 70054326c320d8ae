"""Party processes of the vertical logistic regression end-to-end tests."""

from __future__ import annotations

import warnings
from typing import Any


def linear_party(key: str, invitation: str, role: str, data: dict[str, Any],
                 params: dict[str, Any], out: Any) -> None:
    """Train over the relay, then run or serve one prediction round; report the result or
    the error to ``out``. With ``params["report"]`` (True, or the names that report), each
    iteration is put on ``out`` as ("iteration", name, k)."""
    from fedlab_kit import Identity, Invitation, Party
    from fedlab_kit.errors import FedlabError
    from fedlab_kit.linear import SecureLogisticPassive, SecureLogisticRegression

    warnings.simplefilter("ignore")
    insecure = params.get("insecure_plaintext", False)
    timeout = params.get("timeout", 120)
    with Party(Identity.load(key), Invitation.from_string(invitation)) as party:
        def progress(k: int, total: int, norm: float) -> None:
            report = params.get("report")
            if report is True or (report and party.name in report):
                out.put(("iteration", party.name, k))

        try:
            if role == "label":
                clf = SecureLogisticRegression(C=params.get("C", 1.0),
                                               max_iter=params["max_iter"],
                                               tol=params.get("tol", 1e-4),
                                               insecure_plaintext=insecure)
                clf.fit(data["X"], data["y"], party=party, passive=data["passive"],
                        timeout=timeout, progress=progress)
                proba = clf.predict_proba(data["X_test"], party=party, timeout=timeout)
                out.put((party.name, {"proba": proba, "n_iter": clf.n_iter_,
                                      "reconnects": party.aio.reconnects}))
            else:
                srv = SecureLogisticPassive(insecure_plaintext=insecure)
                srv.fit(data["X"], party=party, active=data["active"], timeout=timeout,
                        progress=progress)
                srv.predict(data["X_test"], party=party, active=data["active"],
                            timeout=timeout)
                out.put((party.name, {"coef": srv.coef_, "n_iter": srv.model.n_iter,
                                      "reconnects": party.aio.reconnects}))
        except FedlabError as exc:
            out.put((party.name, {"error": str(exc), "type": type(exc).__name__}))
        except TimeoutError as exc:
            out.put((party.name, {"error": str(exc), "type": "TimeoutError"}))
