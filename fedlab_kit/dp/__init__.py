"""Differential privacy for joint releases: budget ledger, OpenDP noise, bounding.

Typical use::

    from fedlab_kit import dp

    ledger = dp.PrivacyLedger(workspace / "privacy_ledger.sqlite", total_epsilon=2.0,
                              party="acme")
    bounded, report = dp.bound_contributions(visits, "customer", "region", max_keys=3,
                                             seed=7)
    counts = bounded.groupby("region").size()
    rel = dp.release_counts(ledger, "visits_by_region", counts.to_numpy(), epsilon=0.5,
                            sensitivity=dp.sensitivity_for(3))
    shown = dp.clip_nonnegative(rel.values)        # post-processing is free
    print(shown, "±", rel.ci_halfwidth, "(95%)")

Names load on first use, so importing the ledger alone does not import OpenDP.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BudgetExceeded": "errors",
    "DPError": "errors",
    "Budget": "ledger",
    "PrivacyLedger": "ledger",
    "NoisyRelease": "mechanisms",
    "release_noise": "mechanisms",
    "accuracy_for": "mechanisms",
    "clip_nonnegative": "mechanisms",
    "epsilon_for_accuracy": "mechanisms",
    "gaussian_counts": "mechanisms",
    "laplace_counts": "mechanisms",
    "monotone_funnel": "mechanisms",
    "release_counts": "mechanisms",
    "release_counts_gaussian": "mechanisms",
    "bound_contributions": "bounding",
    "l2_sensitivity_for": "bounding",
    "sensitivity_for": "bounding",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'fedlab_kit.dp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
