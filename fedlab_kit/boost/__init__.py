"""SecureBoost: vertical XGBoost (``hist``) between a label holder and feature holders.

The label holder (*active* party) trains with :class:`SecureBoostClassifier` or
:class:`SecureBoostRegressor`; each feature holder (*passive* party) serves with
:class:`SecureBoostPassive`. Gradients go to the passives encrypted (BFV backend), or in
the clear with ``insecure_plaintext=True`` (tests and benchmarks only). Thresholds and
feature values never leave their owner; each party saves only its part of the model.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ActivePredictor": "active", "ActiveTrainer": "active", "EvalSet": "active",
    "ActiveBackend": "backend", "Backends": "backend", "InsecurePlaintextWarning": "backend",
    "PassiveBackend": "backend", "PlaintextActive": "backend", "PlaintextPassive": "backend",
    "make_backends": "backend", "BoostError": "errors", "SecureBoostClassifier": "estimator",
    "SecureBoostPassive": "estimator", "SecureBoostRegressor": "estimator",
    "ActiveModel": "model", "PassiveModel": "model", "BoostParams": "params",
    "PassivePredictor": "passive", "PassiveTrainer": "passive",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:  # lazy: the protocols import no transport (estimators do)
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'fedlab_kit.boost' has no attribute {name!r}")
