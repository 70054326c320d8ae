"""POI crowd regression: each party's per-POI columns, the label and the P30 metric.

Rows are points of interest (public ids, the shared POI table). The retailer holds the
label, door-counter footfall per day at the POIs it counts, and public POI attributes; the
operator holds its subscribers' visits to each POI; the media owner its billboard sites and
its audience in the POI's district. The parties align POIs with PSI (which reveals to them
the counted POIs, nothing else) and train a :class:`~fedlab_kit.boost.SecureBoostRegressor`
on ``log1p`` footfall; P30 is the share of POIs predicted within 30% of their count.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..boost.params import p30_share
from ..errors import FedlabError, InputError


def _check_pois(table: pd.DataFrame, pois: pd.DataFrame, what: str) -> None:
    unknown = ~table["poi_id"].isin(pois["poi_id"])
    if unknown.any():
        examples = ", ".join(map(str, table.loc[unknown, "poi_id"].head(3)))
        raise FedlabError(f"{what} names {int(unknown.sum())} POIs missing from the POI table "
                          f"(e.g. {examples}); use the same POI table at every party")


def _per_poi(pois: pd.DataFrame, values: pd.Series | pd.DataFrame) -> pd.DataFrame:
    """Values keyed by poi_id, one row per POI of ``pois`` (0 where a POI has none)."""
    frame = values.to_frame() if isinstance(values, pd.Series) else values
    return frame.reindex(pois["poi_id"]).fillna(0.0).reset_index(drop=True)


def retailer_features(pois: pd.DataFrame, campaigns: pd.DataFrame) -> pd.DataFrame:
    """Public POI attributes and whether the POI is one of the retailer's campaign stores."""
    stores = campaigns.loc[campaigns["role"] == "store", "poi_id"].value_counts()
    return pd.DataFrame({
        "poi_id": pois["poi_id"].to_numpy(),
        "category": pd.Categorical(pois["category"]).codes.astype(float),
        "capacity": pois["capacity"].to_numpy(float),
        "campaign_store": pois["poi_id"].map(stores).fillna(0).to_numpy(float),
    })


def operator_features(pois: pd.DataFrame, visits: pd.DataFrame,
                      users: pd.DataFrame) -> pd.DataFrame:
    """The operator's subscribers at each POI: visits and visitors per day, weekend and night
    shares, dwell, and subscribers living and working in the POI's district."""
    _check_pois(visits, pois, "the visit table")
    days = max(1, visits["visit_date"].nunique())
    v = visits.assign(weekend=pd.to_datetime(visits["visit_date"]).dt.day_of_week >= 5,
                      night=(visits["hour"] >= 22) | (visits["hour"] < 6))
    g = v.groupby("poi_id")
    per_poi = pd.DataFrame({
        "sub_visits_per_day": g.size() / days,
        "sub_visitors": g["user_id"].nunique(),
        "sub_weekend_share": g["weekend"].mean(),
        "sub_night_share": g["night"].mean(),
        "sub_dwell_minutes": g["dwell_minutes"].mean(),
    })
    out = _per_poi(pois, per_poi)
    district = pois["district_id"]
    out["subs_home_district"] = district.map(users["home_district_id"].value_counts()
                                             ).fillna(0).to_numpy(float)
    out["subs_work_district"] = district.map(users["work_district_id"].value_counts()
                                             ).fillna(0).to_numpy(float)
    out.insert(0, "poi_id", pois["poi_id"].to_numpy())
    return out


def media_features(pois: pd.DataFrame, media: pd.DataFrame,
                   campaigns: pd.DataFrame) -> pd.DataFrame:
    """The media owner's billboards at each POI and its audience in the POI's district."""
    boards = campaigns.loc[campaigns["role"] == "billboard", "poi_id"].value_counts()
    exposed = media.filter(like="exposed_").sum(axis=1)
    per_district = pd.DataFrame({
        "district_users": media.groupby("exposure_district_id").size(),
        "district_exposed": exposed.groupby(media["exposure_district_id"]).sum(),
        "district_impressions": media.groupby("exposure_district_id")["n_impressions"].sum(),
        "district_sessions": media.groupby("exposure_district_id")["sessions_per_week"].mean(),
        "district_food_share": media.groupby("exposure_district_id")["interest_food"].mean(),
    })
    out = per_district.reindex(pois["district_id"]).fillna(0.0).reset_index(drop=True)
    out.insert(0, "billboards", pois["poi_id"].map(boards).fillna(0).to_numpy(float))
    out.insert(0, "poi_id", pois["poi_id"].to_numpy())
    return out


def footfall_label(footfall: pd.DataFrame, pois: pd.DataFrame) -> pd.Series:
    """``log1p`` footfall per day, indexed like ``footfall``; bad counts are errors."""
    _check_pois(footfall, pois, "the footfall table")
    values = pd.to_numeric(footfall["footfall_per_day"], errors="coerce")
    bad = values.isna() | (values < 0)
    if bad.any():
        raise FedlabError(f"footfall_per_day has {int(bad.sum())} missing or negative counts "
                          f"(first POI {footfall.loc[bad, 'poi_id'].iloc[0]}); fix or drop them")
    if footfall["poi_id"].duplicated().any():
        raise FedlabError("the footfall table lists a POI twice; keep one count per POI")
    return np.log1p(values.astype(float))


def p30(predicted: np.ndarray, true: np.ndarray) -> float:
    """Share of POIs whose prediction is within 30% of the true value."""
    predicted, true = np.asarray(predicted, float), np.asarray(true, float)
    if predicted.shape != true.shape or true.size == 0:
        raise InputError("p30 needs two non-empty arrays of the same shape")
    return p30_share(predicted, true)
