"""Private set intersection (ECDH over Curve25519) for two or three parties."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PsiResult": "api", "psi": "api", "IdError": "ids", "IdReport": "ids",
    "prepare_ids": "ids", "PsiOutcome": "protocol", "PsiProtocol": "protocol",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:  # lazy, so pool workers import only .curve
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'fedlab_kit.psi' has no attribute {name!r}")
