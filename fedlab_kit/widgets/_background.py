"""Shared pieces of the panels: HTML boxes, the display protocol, and background work.

:class:`Background` runs one function at a time in a daemon thread so that the notebook
stays responsive (a PSI run or a connection attempt can take minutes). A failure is shown
in an :class:`ipywidgets.HTML` box as a short message, never as a traceback; tests use
:attr:`Background.busy` and :meth:`Background.join`.
"""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from ..errors import FedlabError

log = logging.getLogger("fedlab.widgets")

_BOX = "padding:6px 10px;border-radius:4px;margin:4px 0;border:1px solid {border};" \
       "background:{background};color:{color};"
_KINDS = {
    "error": {"border": "#d9534f", "background": "#fdf0ef", "color": "#8a1f11"},
    "warning": {"border": "#e0a800", "background": "#fff8e1", "color": "#6b4e00"},
    "info": {"border": "#5bc0de", "background": "#eef8fb", "color": "#1b4f61"},
    "ok": {"border": "#5cb85c", "background": "#eff8ef", "color": "#25592a"},
}


def describe_error(exc: BaseException) -> str:
    """A one-paragraph message for an analyst: fedlab errors speak for themselves."""
    text = str(exc).strip()
    if isinstance(exc, FedlabError) and text:
        return text
    if isinstance(exc, TimeoutError):
        return text or "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def full_width() -> widgets.Layout:
    """A layout filling the panel's width: ``width: 100%`` plus the widgets' own margins
    would overflow the cell and show a horizontal scrollbar."""
    return widgets.Layout(width="auto", align_self="stretch")


def box_html(text: str, kind: str = "info", title: str | None = None) -> str:
    """A coloured box (``kind``: error, warning, info, ok) with escaped ``text``."""
    style = _BOX.format(**_KINDS[kind])
    head = f"<b>{html.escape(title, quote=False)}</b><br>" if title else ""
    body = html.escape(text, quote=False).replace("\n", "<br>")
    return f'<div class="fedlab-{kind}" style="{style}">{head}{body}</div>'


def error_html(title: str, error: BaseException | str) -> str:
    text = error if isinstance(error, str) else describe_error(error)
    return box_html(text, "error", title)


class Panel:
    """Base of the panels: ``.widget`` is the container, displayed in place of the panel."""

    widget: widgets.Box

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


class TaskPanel(Panel):
    """A panel whose long work runs in one :class:`Background` task (``self._task``)."""

    _task: Background

    @property
    def busy(self) -> bool:
        """Work is in progress."""
        return self._task.busy

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the current work (for scripts and tests); ``True`` once it has ended."""
        return self._task.join(timeout)

    @property
    def error(self) -> BaseException | None:
        """The exception of the last run, if it failed."""
        return self._task.error


class Background:
    """Runs one function at a time in a daemon thread; failures go into ``status``.

    ``start`` returns ``False`` (and runs nothing) while an earlier run is still going.
    ``on_success(result)`` and ``on_done()`` run in the worker thread; an exception in
    ``fn`` or ``on_success`` is stored in :attr:`error` and shown in ``status``.
    """

    def __init__(self, status: widgets.HTML, name: str = "fedlab-widget") -> None:
        self.status = status
        self.name = name
        self.result: Any = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._busy = False
        self._finished = threading.Event()
        self._finished.set()

    @property
    def busy(self) -> bool:
        return self._busy

    def start(self, fn: Callable[..., Any], *args: Any, title: str = "Failed",
              on_success: Callable[[Any], None] | None = None,
              on_done: Callable[[], None] | None = None) -> bool:
        with self._lock:
            if self._busy:
                return False
            self._busy = True
            self.result, self.error = None, None
            self._finished.clear()
        thread = threading.Thread(target=self._run, args=(fn, args, title, on_success, on_done),
                                  name=self.name, daemon=True)
        try:
            thread.start()
        except BaseException:
            self._end()
            raise
        return True

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the current run (if any) has finished; ``True`` if it has."""
        return self._finished.wait(timeout)

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...], title: str,
             on_success: Callable[[Any], None] | None,
             on_done: Callable[[], None] | None) -> None:
        try:
            self.result = fn(*args)
            if on_success is not None:
                on_success(self.result)
        except Exception as exc:  # shown in the panel; a thread must not die with a traceback
            self.error = exc
            log.debug("%s failed", self.name, exc_info=True)
            self.status.value = error_html(title, exc)
        finally:
            if on_done is not None:
                try:
                    on_done()
                except Exception:
                    log.debug("%s: on_done failed", self.name, exc_info=True)
            self._end()

    def _end(self) -> None:
        with self._lock:
            self._busy = False
        self._finished.set()
