"""Homomorphic encryption on raw SEAL: BFV with flooding (circuit privacy) and input checks
(:mod:`.bfv`), for exact joint counts and SecureBoost's histograms; row layouts and sparse
masks (:mod:`.layout`); process pools (:mod:`.pool`)."""

from .layout import RowLayout, SparseMask, power_of_two_steps

__all__ = ["RowLayout", "SparseMask", "power_of_two_steps"]
