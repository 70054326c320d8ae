"""Homomorphic encryption on raw SEAL: CKKS with the grouped-sum kernel behind SecureBoost's
histograms (:mod:`.ckks`, :mod:`.grouped`), BFV with flooding and input checks for exact
joint counts (:mod:`.bfv`)."""

from .ckks import SLOTS, PublicContext, SecretContext, power_of_two_steps
from .grouped import RowLayout, SparseMask

__all__ = ["SLOTS", "PublicContext", "RowLayout", "SecretContext", "SparseMask",
           "power_of_two_steps"]
