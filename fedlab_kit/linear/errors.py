"""Errors of the vertical linear models, each with a message meant for an analyst."""

from __future__ import annotations

from fedlab_kit.errors import InputError


class LinearError(InputError):
    """Bad input or hyperparameters, a damaged model file, or parties whose inputs do not fit
    together (rows, model parts, settings). A peer that stopped the joint training is a
    :class:`~fedlab_kit.errors.PeerAborted` (raised by the protocol driver)."""
