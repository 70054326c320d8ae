"""SecureBoost: vertical XGBoost (``hist``) between a label holder and feature holders.

The label holder (*active* party) trains with :class:`SecureBoostClassifier` or
:class:`SecureBoostRegressor`; each feature holder (*passive* party) serves with
:class:`SecureBoostPassive`. Gradients go to the passives encrypted (CKKS backend), or in
the clear with ``insecure_plaintext=True`` (tests and benchmarks only). Thresholds and
feature values never leave their owner; each party saves only its part of the model.
"""

from __future__ import annotations

from .active import ActivePredictor, ActiveTrainer, EvalSet
from .backend import (
    ActiveBackend,
    Backends,
    InsecurePlaintextWarning,
    PassiveBackend,
    PlaintextActive,
    PlaintextPassive,
    make_backends,
)
from .errors import BoostError
from .estimator import SecureBoostClassifier, SecureBoostPassive, SecureBoostRegressor
from .model import ActiveModel, PassiveModel
from .params import BoostParams
from .passive import PassivePredictor, PassiveTrainer

__all__ = [
    "ActiveBackend", "ActiveModel", "ActivePredictor", "ActiveTrainer", "Backends",
    "BoostError", "BoostParams", "EvalSet", "InsecurePlaintextWarning", "PassiveBackend",
    "PassiveModel", "PassivePredictor", "PassiveTrainer", "PlaintextActive",
    "PlaintextPassive", "SecureBoostClassifier", "SecureBoostPassive", "SecureBoostRegressor",
    "make_backends",
]
