"""Notebook panels for analysts (ipywidgets), and the kit's own charts (anywidget).

- :class:`ConnectPanel`: key file + invitation, Connect / Disconnect, live presence of peers.
- :class:`PsiPanel`: private set intersection of a table's ID column, run in the background.
- :class:`PrivacyPanel`: what an epsilon buys before spending it, budget left, releases.
- :class:`TrainingPanel`: the label holder's SecureBoost training (hyperparameters, partners,
  Train / Stop, a live per-tree line, trees and feature importances).
- :class:`PassiveTrainingPanel`: a feature holder serves that training run from a button.
- :class:`MapPanel`: released layers on a folium map, ticked on and off, exported to HTML/PNG.
- :class:`FunnelChart`: exposed vs control stage counts with intervals and lift (custom).
- :class:`TrainingCurve`: the metric per tree, live (custom; inside :class:`TrainingPanel`).

Each panel displays itself in a notebook cell; ``panel.widget`` is its ipywidgets container
and the sub-widgets are attributes (``panel.connect_button`` …) for scripted use and tests.
"""

from __future__ import annotations

from ._background import Background
from .charts import FunnelChart, TrainingCurve
from .connect import ConnectPanel
from .map_panel import MapPanel
from .privacy import PrivacyPanel
from .psi_panel import PsiPanel
from .training import PassiveTrainingPanel, TrainingPanel

__all__ = ["Background", "ConnectPanel", "FunnelChart", "MapPanel", "PassiveTrainingPanel",
           "PrivacyPanel", "PsiPanel", "TrainingCurve", "TrainingPanel"]
