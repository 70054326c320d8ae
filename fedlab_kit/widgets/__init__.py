"""Notebook panels for analysts (ipywidgets only, no custom JavaScript).

- :class:`ConnectPanel`: key file + invitation, Connect / Disconnect, live presence of peers.
- :class:`PsiPanel`: private set intersection of a table's ID column, run in the background.
- :class:`PrivacyPanel`: what an epsilon buys before spending it, budget left, releases.

Each panel displays itself in a notebook cell; ``panel.widget`` is its ipywidgets container
and the sub-widgets are attributes (``panel.connect_button`` …) for scripted use and tests.
"""

from __future__ import annotations

from ._background import Background
from .connect import ConnectPanel
from .privacy import PrivacyPanel
from .psi_panel import PsiPanel

__all__ = ["Background", "ConnectPanel", "PrivacyPanel", "PsiPanel"]
