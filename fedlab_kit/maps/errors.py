"""Exceptions of :mod:`fedlab_kit.maps`, each with a message meant for an analyst."""

from __future__ import annotations

from fedlab_kit.errors import InputError, SetupError


class NotReleasedError(InputError):
    """A frame given to a map layer does not look like a released (DP) aggregate.

    Map layers only draw counts that went through a differentially private release; a frame
    with person identifiers, without a count column or with duplicated keys is refused.
    """


class MapExportError(SetupError):
    """A map could not be exported: web assets or a headless browser are missing, or the
    browser failed. The message says what to install or run."""
