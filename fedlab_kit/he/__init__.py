"""Homomorphic encryption (CKKS on raw SEAL) and the grouped-sum kernel built on it."""

from .ckks import SLOTS, PublicContext, SecretContext, power_of_two_steps
from .grouped import (
    RowLayout,
    SparseMask,
    decrypt_rows,
    encrypt_rows,
    grouped_sums,
    replicate,
)

__all__ = [
    "SLOTS", "PublicContext", "RowLayout", "SecretContext", "SparseMask", "decrypt_rows",
    "encrypt_rows", "grouped_sums", "power_of_two_steps", "replicate",
]
