"""Horizontal federated learning: parties with the same columns about different people or
places. Secure aggregation (:class:`SecAgg`, :class:`SecureSum`) sums their vectors so that
the aggregator learns the total only, with dropouts recovered from Shamir shares."""

from __future__ import annotations

from .errors import HorizontalError
from .secagg import SecAgg
from .secure_sum import SecureSum, SumResult, secure_sum

__all__ = ["HorizontalError", "SecAgg", "SecureSum", "SumResult", "secure_sum"]
