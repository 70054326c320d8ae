"""Vertical logistic regression between a label holder and feature holders.

The label holder trains with :class:`SecureLogisticRegression`; each feature holder serves
with :class:`SecureLogisticPassive`. Inner products of a party's columns with another
party's per-row contributions are computed under BFV (coefficient encoding, flooded before
decryption), or in the clear with ``insecure_plaintext=True`` (tests and benchmarks only).
Each party keeps its own block of weights; nobody sees a logit in the clear during training.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "InsecurePlaintextWarning": "backend", "LinearError": "errors",
    "SecureLogisticPassive": "estimator", "SecureLogisticRegression": "estimator",
    "LinearModel": "model", "LabelPredictor": "predictor", "FeaturePredictor": "predictor",
    "LinearParams": "trainer", "LinearTrainer": "trainer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:  # lazy, as fedlab_kit.boost
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'fedlab_kit.linear' has no attribute {name!r}")
