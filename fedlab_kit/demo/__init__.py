"""The demo and its helpers: the headless demo job (:mod:`.job`), its training stages
(:mod:`.training`), the local relay and party processes (:mod:`.harness`) and the steps the
role notebooks call (:mod:`.notebook`). Not needed to use the library."""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULES = {"job", "training", "harness", "notebook"}


def __getattr__(name: str) -> Any:  # ``from fedlab_kit.demo import run_demo`` keeps working
    if name in _SUBMODULES or name.startswith("__"):
        raise AttributeError(name)
    job = importlib.import_module(".job", __name__)
    try:
        return getattr(job, name)
    except AttributeError:
        raise AttributeError(f"module 'fedlab_kit.demo' has no attribute {name!r}") from None
