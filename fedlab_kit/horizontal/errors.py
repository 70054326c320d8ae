"""Errors of horizontal federated learning, each with a message meant for an analyst."""

from __future__ import annotations

from fedlab_kit.errors import InputError


class HorizontalError(InputError):
    """Bad input or settings, parties whose inputs do not fit together, or too few parties
    left for a sum that hides each one's input. A peer that stopped the joint run is a
    :class:`~fedlab_kit.errors.PeerAborted` (raised by the protocol driver)."""
