"""Small helpers for the per-role notebooks (``notebooks/1x_<role>.ipynb``).

The notebooks keep their cells short: reading the party's own table, preparing the
workspace, and the scripted (``AUTO_RUN``) path that clicks the panels' buttons and waits
with a deadline all live here.
"""

from __future__ import annotations

import html
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from .. import tables
from ..errors import FedlabError
from .progress import CellProgress

__all__ = ["CellProgress", "connect_and_wait", "press_and_wait", "read_table",
           "run_psi_and_wait", "save_aligned", "status_text", "wait_for", "workspace_dir"]

T = TypeVar("T")

_TAG = re.compile(r"<[^>]+>")
_TITLE_END = re.compile(r"</b>\s*<br>")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, *,
             failed: Callable[[], str | None] | None = None, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    ``failed`` (optional) is polled too: when it returns a message, give up at once with a
    :class:`~fedlab_kit.errors.FedlabError` instead of waiting for the deadline. After
    ``timeout`` seconds, raise a :class:`TimeoutError` that says what was awaited.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        problem = failed() if failed is not None else None
        if problem:
            raise FedlabError(f"gave up waiting for {what}: {problem}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def status_text(value: str) -> str:
    """The plain text of a panel's HTML status box ("title: message")."""
    value = _TITLE_END.sub(": ", value)
    return " ".join(html.unescape(_TAG.sub(" ", value)).split())


def read_table(data: str | os.PathLike[str] | None, role: str,
               id_column: str = "user_id") -> pd.DataFrame:
    """The party's own table: ``data`` (a CSV or Parquet file) or, if ``None``, the sample.

    In a CSV the ID column is read as text, so IDs such as ``00123`` keep their zeros and
    match the same IDs held as text by the other parties.
    """
    if data is None or str(data).strip() == "":
        from ..data import load_sample

        return load_sample(role)
    if not Path(data).expanduser().is_file():
        raise FedlabError(f"no data file at {str(data)!r} (set DATA to your CSV or Parquet "
                          "file, or to None for the shipped sample)")
    return tables.read_table(data, id_column)


def workspace_dir(workspace: str | os.PathLike[str]) -> Path:
    """Create (private to this user, mode 0700) and return the workspace folder."""
    path = Path(workspace).expanduser()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def connect_and_wait(panel: Any, timeout: float = 120.0) -> Any:
    """Press the ConnectPanel's Connect button and wait until it is connected.

    Returns the connected :class:`~fedlab_kit.net.session.Party`; raises with the panel's own
    message if the connection fails, or :class:`TimeoutError` after ``timeout`` seconds.
    """
    if panel.party is None:
        panel.connect_button.click()

    def failed() -> str | None:
        if panel.party is None and not panel.busy:
            return status_text(panel.status.value) or "the connection failed"
        return None

    return wait_for(lambda: panel.party, timeout, "the connection to the relay",
                    failed=failed)


def run_psi_and_wait(psi: Any, timeout: float = 300.0) -> Any:
    """Press the PsiPanel's Run button and wait for the result (every peer must run too).

    Returns the :class:`~fedlab_kit.psi.PsiResult`; raises with the panel's message if the
    run fails or cannot start, or :class:`TimeoutError` after ``timeout`` seconds.
    """
    psi.run_button.click()
    if not psi.join(timeout):
        raise TimeoutError(f"timed out after {timeout:g} s waiting for PSI to finish "
                           "(did every party press Run with the same session?)")
    if psi.error is not None:
        raise FedlabError(f"PSI failed: {status_text(psi.status.value)}") from psi.error
    if psi.result is None:
        raise FedlabError(f"PSI did not start: {status_text(psi.status.value)}")
    return psi.result


def press_and_wait(panel: Any, button: Any, what: str, timeout: float = 600.0) -> Any:
    """Press ``button`` of a background panel (training, serving) and wait for its model.

    Returns ``panel.model``; raises with the panel's own message if the run fails, or
    :class:`TimeoutError` after ``timeout`` seconds.
    """
    button.click()
    if not panel.join(timeout):
        raise TimeoutError(f"timed out after {timeout:g} s waiting for {what} (did every "
                           "party press its button?)")
    if panel.error is not None or panel.model is None:
        raise FedlabError(f"{what} failed: {status_text(panel.status.value)}") from panel.error
    return panel.model


def save_aligned(aligned: pd.DataFrame | None, workspace: str | os.PathLike[str],
                 role: str) -> Path | None:
    """Write ``<workspace>/<role>_aligned.parquet``; ``None`` if nothing was revealed."""
    if aligned is None:
        return None
    path = workspace_dir(workspace) / f"{role}_aligned.parquet"
    tables.write_table(aligned, path, private=True)  # the common customers' rows: private
    return path
