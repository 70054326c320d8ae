"""Errors of the SecureBoost layer, each with a message meant for an analyst."""

from __future__ import annotations

from fedlab_kit.errors import FedlabError


class BoostError(FedlabError, ValueError):
    """Bad input, bad hyperparameters, or a peer that aborted the joint training."""
