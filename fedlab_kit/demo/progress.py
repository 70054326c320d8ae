"""Progress of a notebook cell's long, blocking step (joint releases, the POI crowd model).

:class:`CellProgress` is a :data:`~fedlab_kit.protocol.ProgressCallback` that draws one
tqdm bar per stage (a widget in JupyterLab, text in a terminal). Such a cell is cancelled
the way every cell is: interrupt the kernel. The run then stops in the party's loop and
tells the partners why (see :meth:`fedlab_kit.net.session.Party.run`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from tqdm.auto import tqdm

CANCEL_HINT = "to cancel, interrupt the kernel (the ■ button); the partners are told"


class CellProgress:
    """``progress(stage, done, total)``: the bar of ``stage`` shows ``done`` of ``total``.

    Use it as a context manager (the bars close at the end, also on an error) and pass it
    as ``progress=``; :meth:`tree` is the per-tree callback of SecureBoost's ``fit``."""

    def __init__(self, what: str, *, hint: bool = True) -> None:
        self.what = what
        self.bars: dict[str, Any] = {}
        self._lock = threading.Lock()  # callbacks come from the party's loop thread
        if hint:
            print(f"{what}: running; {CANCEL_HINT}.", flush=True)

    def __call__(self, stage: str, done: int, total: int) -> None:
        with self._lock:
            bar = self.bars.get(stage)
            if bar is None:
                bar = self.bars[stage] = tqdm(total=max(total, 1), desc=stage, leave=True,
                                              dynamic_ncols=True)
            if total > 0 and bar.total != total:
                bar.total = total
            bar.n = min(max(done, 0), int(bar.total))
            bar.refresh()

    def step(self, name: str) -> Callable[[str, int, int], None]:
        """The callback of one step of the cell: its bars are labelled ``name: stage``."""
        return lambda stage, done, total: self(f"{name}: {stage}", done, total)

    def tree(self, tree: int, n_trees: int, metrics: Mapping[str, float] | None = None
             ) -> None:
        """SecureBoost's ``progress(tree, n_trees, metrics)``: the trees built so far."""
        self(f"{self.what}: trees", tree, n_trees)

    def close(self) -> None:
        with self._lock:
            for bar in self.bars.values():
                bar.close()

    def __enter__(self) -> CellProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
