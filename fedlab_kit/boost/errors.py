"""Errors of the SecureBoost layer, each with a message meant for an analyst."""

from __future__ import annotations

from fedlab_kit.errors import InputError


class BoostError(InputError):
    """Bad input or hyperparameters, a damaged model file, or parties whose inputs do not fit
    together (rows, columns, model parts, settings). A peer that stopped the joint training
    is a :class:`~fedlab_kit.errors.PeerAborted` (raised by the protocol driver)."""
