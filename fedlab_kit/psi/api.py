"""``psi()``: align customers with peers, from a notebook or the CLI."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import FedlabError
from ..protocol import run
from ..session import Party
from .ids import DuplicatePolicy, IdReport, Normalize, prepare_ids
from .protocol import BATCH, PsiProtocol, Reveal


@dataclass
class PsiResult:
    """What PSI gave this party.

    ``rows`` are positions into the input, in the order every party shares (row i is the
    same customer everywhere); ``None`` where the intersection was not revealed to us.
    ``size`` is the intersection size (-1 if not revealed to us).
    """

    rows: np.ndarray | None
    size: int
    sizes: dict[str, int]
    report: IdReport
    seconds: float
    ids: pd.Series | None = None

    def align(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``frame`` (same length as the PSI input) in the shared order."""
        if self.rows is None:
            raise FedlabError("the intersection was not revealed to this party")
        if len(frame) != self.report.n_input:
            raise FedlabError(f"frame has {len(frame)} rows; PSI ran on {self.report.n_input}")
        return frame.iloc[self.rows].reset_index(drop=True)

    def summary(self) -> str:
        sizes = ", ".join(f"{p}: {n}" for p, n in sorted(self.sizes.items()))
        got = "not revealed to us" if self.size < 0 else f"{self.size} common IDs"
        return f"PSI: {got} (set sizes {sizes}) in {self.seconds:.1f} s. {self.report.summary()}"


ProgressFn = Callable[[str, int, int], None]


def psi(
    party: Party, ids: Iterable[Any] | pd.Series, *, peers: list[str] | None = None,
    reveal: Reveal = "intersection", receivers: list[str] | None = None,
    duplicates: DuplicatePolicy = "raise", normalize: Normalize = None,
    session: str = "psi", workers: int | None = None, progress: ProgressFn | None = None,
    timeout: float | None = 600.0, batch: int = BATCH,
) -> PsiResult:
    """Private set intersection of ``ids`` with ``peers`` (default: every peer in the room).

    Every party calls this with the same ``peers`` (as a set, itself included implicitly),
    ``reveal``, ``receivers`` and ``session``. Scalar multiplications run in a process pool
    of ``workers`` processes (default: every core).
    """
    started = time.monotonic()
    peers = list(peers if peers is not None else party.peers)
    unknown = [p for p in peers if p not in party.peers]
    if unknown:
        raise FedlabError(f"PSI peers {unknown} are not in this room; peers: {party.peers}")
    keys, rows, report = prepare_ids(ids, duplicates=duplicates, normalize=normalize)
    try:
        proto = PsiProtocol(party.name, [party.name, *peers], keys, reveal=reveal,
                            receivers=receivers, batch=batch)
    except ValueError as exc:
        raise FedlabError(str(exc)) from None
    n_workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(n_workers, mp_context=mp.get_context("spawn")) as pool:
        outcome = run(party, proto, session=session, timeout=timeout, progress=progress,
                      executor=pool)
    input_rows = None if outcome.positions is None else rows[outcome.positions]
    aligned_ids = None
    if input_rows is not None and isinstance(ids, pd.Series):
        aligned_ids = ids.iloc[input_rows]
    return PsiResult(input_rows, outcome.size, outcome.sizes, report,
                     time.monotonic() - started, aligned_ids)
