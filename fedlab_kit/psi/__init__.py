"""Private set intersection: ECDH over Curve25519 (two or three parties) and KKRT OT-extension
PSI (two parties)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PsiResult": "api", "psi": "api", "IdError": "ids", "IdReport": "ids",
    "prepare_ids": "ids", "PsiOutcome": "protocol", "PsiProtocol": "protocol",
    "KkrtProtocol": "kkrt", "PartitionedIds": "dataset",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:  # lazy, so pool workers import only .curve / .ote
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'fedlab_kit.psi' has no attribute {name!r}")
