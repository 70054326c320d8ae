"""Ground-truth tables, computed from the party tables exactly as written.

Because truth is derived from the published frames (not from hidden state), anyone can
recompute it from the files, and federated results can be checked against it.

* crowd truth: over persons present at BOTH the retailer and the operator;
* funnel truth: over persons present at ALL THREE parties.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CROWD_LEVELS = ("poi_id", "h3_r8", "h3_r9")


def ta_columns(retailer: pd.DataFrame) -> list[str]:
    """The retailer's target-audience label columns (``ta_<industry>``)."""
    return [c for c in retailer.columns if c.startswith("ta_")]


def crowd_truth(retailer: pd.DataFrame, visits: pd.DataFrame, pois: pd.DataFrame) -> pd.DataFrame:
    """Distinct TA persons per POI and per H3 cell (res 8 and 9) for each TA label.

    Population: persons in both the retailer and the operator tables. A person counts at
    most once per cell however often they visit it. Every cell holding a POI is listed,
    with zero counts where nobody from the population visited.
    """
    labels = ta_columns(retailer)
    seen = visits[["user_id", "poi_id"]].merge(retailer[["user_id", *labels]], on="user_id")
    seen = seen.merge(pois[list(CROWD_LEVELS)], on="poi_id")
    parts = []
    for level in CROWD_LEVELS:
        cells = np.sort(pois[level].unique())
        once = seen.drop_duplicates(["user_id", level])
        visitors = once.groupby(level).size().reindex(cells, fill_value=0)
        for label in labels:
            hits = once.loc[once[label] == 1].groupby(level).size()
            parts.append(
                pd.DataFrame(
                    {
                        "level": level.replace("_id", ""),
                        "cell_id": cells,
                        "ta_label": label.removeprefix("ta_"),
                        "persons": hits.reindex(cells, fill_value=0).to_numpy(dtype=np.int64),
                        "visitors": visitors.to_numpy(dtype=np.int64),
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)


def funnel_truth(
    retailer: pd.DataFrame,
    media: pd.DataFrame,
    users: pd.DataFrame,
    visits: pd.DataFrame,
    campaigns: pd.DataFrame,
    district_ids: list[str],
    multiplier: dict[str, dict[str, float]],
) -> pd.DataFrame:
    """Exposed vs control funnel per campaign and district, over the three-way intersection.

    Stages are nested: ``visited`` = visited at least one of the campaign's stores in the
    window (operator), ``purchased`` = visited and ``purchases > 0`` (retailer),
    ``repeat`` = purchased and ``repeat_purchase`` (retailer). The district is the media
    owner's ``exposure_district_id`` (the person's home district).
    """
    cols = ["user_id", "purchases", "repeat_purchase"]
    base = media.merge(retailer[cols], on="user_id").merge(users[["user_id"]], on="user_id")
    parts = []
    for campaign in sorted(campaigns["campaign"].unique()):
        stores = campaigns.loc[
            (campaigns["campaign"] == campaign) & (campaigns["role"] == "store"), "poi_id"
        ]
        visitors = visits.loc[visits["poi_id"].isin(stores), "user_id"].unique()
        parts.append(_funnel_one(base, campaign, visitors, district_ids, multiplier[campaign]))
    return pd.concat(parts, ignore_index=True)


def _funnel_one(
    base: pd.DataFrame,
    campaign: str,
    visitors: np.ndarray,
    district_ids: list[str],
    multiplier: dict[str, float],
) -> pd.DataFrame:
    """Funnel rows for one campaign (every district x {exposed, control})."""
    visited = base["user_id"].isin(visitors)
    purchased = visited & (base["purchases"] > 0)
    stages = pd.DataFrame(
        {
            "district_id": base["exposure_district_id"],
            "group": np.where(base[f"exposed_{campaign}"] == 1, "exposed", "control"),
            "persons": 1,
            "visited": visited.astype(np.int64),
            "purchased": purchased.astype(np.int64),
            "repeat": (purchased & base["repeat_purchase"].astype(bool)).astype(np.int64),
        }
    )
    grid = pd.MultiIndex.from_product(
        [district_ids, ["exposed", "control"]], names=["district_id", "group"]
    )
    out = stages.groupby(["district_id", "group"]).sum().reindex(grid, fill_value=0)
    out = out.astype(np.int64).reset_index()
    out.insert(0, "campaign", campaign)
    out.insert(3, "true_multiplier", out["district_id"].map(multiplier).astype(float))
    out.insert(3, "effect_district", out["true_multiplier"] > 1.0)
    persons = out["persons"].where(out["persons"] > 0)
    for stage in ("visited", "purchased", "repeat"):
        out[f"{stage}_rate"] = (out[stage] / persons).round(6)
    return out
