"""Accuracy before spending: what a release of the kit's joint queries will look like.

Nothing here touches a ledger or data that is not the caller's own: a preview is a
function of the query (epsilon, sensitivity, shares, alpha) and, for the crowd, of a
bounding loss the caller supplies (the visit holder can measure it on its own data with
:func:`bounding_loss_of`; the label holder can take last release's figure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from .bounding_bias import loss_from_totals, pair_totals
from .errors import DPError
from .hierarchy import linear_halfwidths
from .ledger import check_epsilon
from .mechanisms import accuracy_for, check_share, halfwidth_of

#: the funnel's default share of epsilon for the district totals (over campaigns and groups),
#: released directly: at epsilon 1 and 100,000 persons it keeps every district's stage
#: counts within 5% (fedlab bench dp --seeds 5: worst 2.2% at 0.5, 5.35% at 0.25)
DISTRICT_SHARE = 0.5

STAGE_NAMES = ("persons", "visited", "purchased", "repeat")


@dataclass(frozen=True)
class Preview:
    """The expected accuracy of one release. ``halfwidth`` is the DP-noise half-width of
    its main numbers (``1 - alpha``); ``parts`` splits epsilon the way the ledger will."""

    query: str
    epsilon: float
    alpha: float
    halfwidth: float
    parts: dict[str, float]
    accuracy: float
    notes: list[str] = field(default_factory=list)
    by_stage: pd.DataFrame | None = None

    def summary(self) -> str:
        parts = ", ".join(f"{k} ε {v:.3g}" for k, v in self.parts.items())
        text = (f"ε = {self.epsilon:.3g} for {self.query} ({parts}): each main number's "
                f"{1 - self.alpha:.0%} interval is ± {self.halfwidth:.3g} from the DP noise")
        return " ".join([text + ".", *self.notes])


def bounding_loss_of(visits: pd.DataFrame, person_col: str, cell_col: str,
                     max_cells: int) -> float:
    """The share of (person, cell) pairs that bounding to ``max_cells`` would remove, on the
    visit holder's own visits (exact, not DP: for its own eyes only)."""
    pairs = visits.dropna(subset=[person_col, cell_col]).drop_duplicates([person_col, cell_col])
    return loss_from_totals(pair_totals(pairs[person_col], max_cells), max_cells)


def preview_crowd(epsilon: float, max_cells: int = 5, *, bounding_share: float = 0.05,
                  alpha: float = 0.05, loss: float | None = None,
                  typical_count: float = 100.0) -> Preview:
    """A crowd release (joint or own): noise half-width of the bounded counts and, with a
    ``loss`` (share of pairs bounding removes), the interval a cell of ``typical_count``
    persons gets and the share of that interval due to bounding."""
    eps, share = check_epsilon(epsilon), check_share(bounding_share, "bounding_share")
    acc = accuracy_for(eps * (1 - share), max_cells, alpha)
    half = halfwidth_of(acc)
    parts = {"counts": eps * (1 - share), "pairs removed by bounding": eps * share}
    notes = []
    if loss is None and share > 0:
        notes.append("The upper end also allows for what bounding removes: it grows by "
                     "1 / (1 - 2 loss), loss being the share of visits removed, measured "
                     "(with DP) at release.")
    if loss is not None and share > 0:
        bounded = typical_count * (1 - loss)
        low, high = bounded - half, (bounded + half) / (1 - 2 * loss)
        width = high - low
        notes.append(f"With {loss:.1%} of visits removed by bounding to {max_cells} cells, a "
                     f"cell of {typical_count:g} persons gets [{low:.0f}, {high:.0f}]: width "
                     f"{width:.0f}, {1 - 2 * half / width:.0%} of it for bounding.")
    elif share == 0:
        notes.append("Without a bounding share the interval covers the bounded count only: "
                     "persons in more cells than the bound are not counted everywhere.")
    return Preview(f"crowd per cell (each person in at most {max_cells} cells)", eps, alpha,
                   half, parts if share > 0 else {"counts": eps}, acc, notes)


def preview_counts(epsilon: float, sensitivity: float, *, alpha: float = 0.05,
                   query: str = "counts") -> Preview:
    """Plain DP counts of L1 ``sensitivity`` (:func:`~fedlab_kit.dp.release_counts`)."""
    eps = check_epsilon(epsilon)
    acc = accuracy_for(eps, sensitivity, alpha)
    note = (f"Each released count is off by less than {acc:.3g} with probability "
            f"{1 - alpha:.0%} (so by at most {halfwidth_of(acc)}).")
    return Preview(f"{query} (sensitivity {sensitivity:g})", eps, alpha, halfwidth_of(acc),
                   {"counts": eps}, acc, [note])


def preview_funnel(epsilon: float, n_campaigns: int = 3, *,
                   district_share: float = DISTRICT_SHARE, alpha: float = 0.05) -> Preview:
    """The ad funnel: per stage, the half-width of a (campaign, district, group) count and
    of a district total over campaigns and groups, after least-squares reconciliation."""
    eps, share = check_epsilon(epsilon), check_share(district_share, "district_share")
    if isinstance(n_campaigns, bool) or int(n_campaigns) != n_campaigns or n_campaigns < 1:
        raise DPError(f"n_campaigns must be a whole number >= 1, got {n_campaigns!r}")
    b_d = n_campaigns / (eps * (1 - share))
    b_t = n_campaigns / (eps * share) if share > 0 else math.inf
    err = linear_halfwidths(2 * n_campaigns, len(STAGE_NAMES), b_d, b_t, alpha, draws=50_000)
    table = pd.DataFrame({"stage": STAGE_NAMES, "funnel_halfwidth": err.detail.round(1),
                          "district_total_halfwidth": err.total.round(1)})
    parts = {"funnels": eps * (1 - share)}
    if share > 0:
        parts["district totals"] = eps * share
    last = table.iloc[-1]
    notes = [f"Last stage: ± {last['funnel_halfwidth']:.3g} per funnel, "
             f"± {last['district_total_halfwidth']:.3g} per district total."]
    return Preview(f"ad funnel ({n_campaigns} campaigns)", eps, alpha,
                   float(err.detail[-1]), parts, float(err.detail[-1]), notes, table)
