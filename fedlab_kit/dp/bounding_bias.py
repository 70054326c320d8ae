"""What contribution bounding removes, estimated with DP, and counts corrected for it.

Bounding each person to ``k`` keys (:func:`~fedlab_kit.dp.bound_contributions`) makes the
noise small but biases counts down: a person seen in ``m > k`` cells is dropped from
``m - k`` of them. The visit holder releases, with a small share of the budget, how many
(person, key) pairs bounding kept and removed in all; their ratio is the city-wide share
``loss`` of pairs that bounding removed.

A released cell then reads (``noisy`` the bounded DP count, ``h`` its noise half-width):

* ``count = noisy / (1 - loss)``: the bounded count scaled back up;
* ``ci_low = noisy - h``: bounding only removes persons, so this holds whatever the cell;
* ``ci_high = (noisy + h) / (1 - 2 loss)``: assumes the cell lost at most twice the
  city-wide share (cells where heavy visitors crowd together more than that can be missed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .errors import DPError
from .ledger import PrivacyLedger
from .mechanisms import release_counts, suppression_note

BOUNDING_SHARE = 0.05  # of a crowd release's epsilon: the pairs bounding kept and removed
TOP_FACTOR = 4  # persons with more than TOP_FACTOR * k keys count as that many
MAX_LOSS = 0.45  # above this the upper end would be unbounded: say so instead
SIGNIFICANCE = 0.001  # a removed count below the noise's bound at this level counts as 0


@dataclass(frozen=True)
class BoundingLoss:
    """The DP estimate of the share of (person, key) pairs that bounding to ``max_keys``
    removed, with what it cost."""

    loss: float
    max_keys: int
    epsilon: float
    release_id: int | None = None

    @property
    def scale_up(self) -> float:
        return 1.0 / (1.0 - self.loss)

    @property
    def upper_factor(self) -> float:
        return 1.0 / (1.0 - 2.0 * self.loss)

    def to_meta(self) -> dict[str, Any]:
        return {"bounding_loss": self.loss, "max_keys": self.max_keys,
                "bounding_epsilon": self.epsilon}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> BoundingLoss:
        loss = float(meta.get("bounding_loss", 0.0))
        if not 0.0 <= loss <= MAX_LOSS:
            raise DPError(f"the bounding loss {loss!r} is outside [0, {MAX_LOSS}]")
        return cls(loss, int(meta.get("max_keys", 1)), float(meta.get("bounding_epsilon", 0.0)))


def pair_totals(persons: pd.Series, max_keys: int) -> np.ndarray:
    """``[kept, removed]``: (person, key) pairs that bounding to ``max_keys`` keeps and
    removes, each person counted up to ``TOP_FACTOR * max_keys`` keys. ``persons`` has one
    entry per distinct (person, key) pair. One person changes the pair by at most
    ``TOP_FACTOR * max_keys`` in L1."""
    per = np.minimum(persons.value_counts().to_numpy(), TOP_FACTOR * max_keys)
    kept = np.minimum(per, max_keys)
    return np.array([kept.sum(), (per - kept).sum()], dtype=np.int64)


def loss_from_totals(totals: np.ndarray, max_keys: int, noise: float = 0.0) -> float:
    """Share of pairs removed (clamped to [0, MAX_LOSS]); persons above the cap count as
    the cap, an underestimate that the ``2 loss`` of the upper end absorbs. A removed count
    within ``noise`` of 0 (the noise's bound at ``SIGNIFICANCE``) is taken as 0: in a small
    population the noise alone would otherwise scale every count up."""
    kept, removed = (float(v) for v in totals)
    if kept + removed <= 0 or removed <= noise:
        return 0.0
    return float(min(removed / (kept + removed), MAX_LOSS))


def release_bounding_loss(ledger: PrivacyLedger, query: str, persons: pd.Series,
                          max_keys: int, epsilon: float) -> BoundingLoss:
    """Release the kept and removed pair totals (discrete Laplace, L1 sensitivity
    ``TOP_FACTOR * max_keys``, paid on ``ledger``) and return the loss they imply; with
    ``epsilon`` 0 nothing is released or paid and the loss is taken as 0."""
    if epsilon == 0:
        return BoundingLoss(0.0, max_keys, 0.0)
    top = TOP_FACTOR * max_keys
    rel = release_counts(ledger, f"{query}: pairs removed by bounding",
                         pair_totals(persons, max_keys), epsilon, sensitivity=top,
                         meta={"max_keys": max_keys, "cap": top}, alpha=SIGNIFICANCE)
    return BoundingLoss(loss_from_totals(np.asarray(rel.values), max_keys, rel.accuracy),
                        max_keys, rel.epsilon, rel.release_id)


def corrected_counts(noisy: np.ndarray, halfwidth: float, loss: BoundingLoss
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count, ci_low, ci_high) for bounded DP counts, corrected for what bounding removed
    (see the module docstring); all non-negative integers."""
    noisy = np.asarray(noisy, dtype=np.float64)
    count = np.rint(np.maximum(noisy, 0) * loss.scale_up).astype(np.int64)
    low = np.maximum(np.ceil(noisy - halfwidth), 0).astype(np.int64)
    high = np.floor(np.maximum(noisy + halfwidth, 0) * loss.upper_factor).astype(np.int64)
    return count, low, np.maximum(high, count)


def corrected_frame(cell_col: str, keys: list[Any], noisy: np.ndarray, halfwidth: int,
                    loss: BoundingLoss, suppress_below: int, epsilon: float) -> pd.DataFrame:
    """The released cells frame: ``count``, ``ci_low``, ``ci_high`` (corrected, see
    :func:`corrected_counts`), ``dp_noise`` (the noise half-width alone), ``bounding_added``
    (what the correction added), ``suppressed`` (noisy bounded count below
    ``suppress_below``: post-processing) and ``suppressed_because``."""
    noisy = np.asarray(noisy)
    count, low, high = corrected_counts(noisy, halfwidth, loss)
    suppressed = noisy < suppress_below
    frame = pd.DataFrame({
        cell_col: keys, "count": count, "ci_low": low, "ci_high": high,
        "dp_noise": halfwidth, "bounding_added": count - np.maximum(noisy, 0),
        "suppressed": suppressed,
        "suppressed_because": suppression_note(suppressed, suppress_below),
    })
    frame.attrs.update({"interval": "95% for the true crowd over the aligned persons",
                        "bounding_loss": loss.loss, "epsilon": float(epsilon)})
    return frame
