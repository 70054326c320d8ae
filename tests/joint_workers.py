"""Party processes for the joint-analytics end-to-end tests (spawned)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from fedlab_kit import Identity, Invitation, Party


def crowd_party(role: str, key: str, invitation: str, workdir: str, budget: float,
                out: Any) -> None:
    """Retailer: labels; operator: visits, paying from a ledger of ``budget`` epsilon."""
    from fedlab_kit.analytics import joint_crowd
    from fedlab_kit.dp import PrivacyLedger

    persons = [f"u{i}" for i in range(300)]
    with Party(Identity.load(key), Invitation.from_string(invitation)) as party:
        try:
            if role == "retailer":
                cells = joint_crowd.crowd_for_labels(party, [i % 2 for i in range(300)],
                                                     visit_holder="operator", timeout=120)
                out.put((role, "ok", int(cells["count"].sum())))
            else:
                ledger = PrivacyLedger(Path(workdir) / "op.sqlite", total_epsilon=budget,
                                       party=role)
                visits = pd.DataFrame({"user_id": persons * 2,
                                       "h3": [f"c{i % 7}" for i in range(600)]})
                joint_crowd.crowd_for_visits(party, persons, visits, ledger=ledger, epsilon=1.0,
                                             keys=[f"c{i}" for i in range(7)],
                                             label_holder="retailer", timeout=120)
                out.put((role, "ok", ledger.remaining().epsilon))
        except Exception as exc:
            out.put((role, type(exc).__name__, str(exc)))


def misaligned_party(role: str, key: str, invitation: str, workdir: str, out: Any) -> None:
    """The operator brings 250 aligned persons where the retailer has 300."""
    from fedlab_kit.analytics import joint_crowd
    from fedlab_kit.dp import PrivacyLedger

    with Party(Identity.load(key), Invitation.from_string(invitation)) as party:
        try:
            if role == "retailer":
                joint_crowd.crowd_for_labels(party, [1] * 300, visit_holder="operator",
                                             timeout=120)
            else:
                persons = [f"u{i}" for i in range(250)]
                visits = pd.DataFrame({"user_id": persons, "h3": ["c0"] * 250})
                ledger = PrivacyLedger(Path(workdir) / "op.sqlite", total_epsilon=1.0,
                                       party=role)
                joint_crowd.crowd_for_visits(party, persons, visits, ledger=ledger,
                                             epsilon=1.0, keys=["c0"], label_holder="retailer",
                                             timeout=120)
            out.put((role, "ok", ""))
        except Exception as exc:
            out.put((role, type(exc).__name__, str(exc)))
