"""Errors of the differential-privacy layer, each with a message meant for an analyst."""

from __future__ import annotations

from fedlab_kit.errors import InputError


class DPError(InputError):
    """A differential-privacy parameter, ledger or release request is invalid."""


class BudgetExceeded(DPError):
    """A release was refused because it would overspend the party's privacy budget.

    Nothing was recorded and no noise was drawn. ``asked`` and ``remaining`` are
    ``(epsilon, delta)`` pairs.
    """

    def __init__(self, query: str, party: str, asked: tuple[float, float],
                 remaining: tuple[float, float], total: tuple[float, float]) -> None:
        super().__init__(
            f"release {query!r} refused: it needs epsilon={asked[0]:.10g}, delta={asked[1]:.10g}"
            f" but party {party!r} has only epsilon={remaining[0]:.10g},"
            f" delta={remaining[1]:.10g} left (of epsilon={total[0]:.10g},"
            f" delta={total[1]:.10g}); nothing was released or recorded")
        self.query, self.party = query, party
        self.asked, self.remaining, self.total = asked, remaining, total
