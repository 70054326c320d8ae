"""Outcomes (conversion, purchases) and the tables each party holds about its own users."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedlab_kit.data.geography import to_km
from fedlab_kit.data.people import AGE_BANDS, CAMPAIGNS, INTERESTS, TA_LABELS, Universe
from fedlab_kit.data.visits import NIGHT_HOURS, WEEKEND, WINDOW_DAYS, WINDOW_START, VisitLog

CONVERSION_UPLIFT = 0.8  # logit uplift of exposure, only in a campaign's effect districts
_AGE_CONVERSION = np.array([0.1, 0.3, 0.3, 0.1, -0.2, -0.4])


@dataclass
class Outcomes:
    """Retailer-side facts for every person of the universe."""

    past_spend: np.ndarray
    tenure_days: np.ndarray
    converted: np.ndarray
    purchases: np.ndarray
    repeat: np.ndarray


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def simulate_outcomes(
    u: Universe,
    exposed: np.ndarray,
    effect: np.ndarray,
    mall_visits: np.ndarray,
    campaign_visits: np.ndarray,
    rng: np.random.Generator,
) -> Outcomes:
    """Conversion, purchases and repeat purchase; ``effect`` is (n_campaigns, n_districts) bool.

    Conversion depends on the retailer's own features (spend, tenure, age, TA labels) and on
    what the other parties hold: interests (media), exposure in effect districts (media) and
    mall and campaign-store visits (operator).
    """
    past_spend = np.round(np.exp(5.5 + 0.8 * u.wealth + rng.normal(0, 0.4, u.size)), 2)
    tenure = np.minimum(4000, 14 + rng.gamma(1.5, 500.0, u.size)).astype(np.int64)
    campaign_interest = u.interest[:, [INTERESTS.index(i) for i in CAMPAIGNS.values()]]
    effective = exposed & effect[:, u.home_district].T
    logit = (
        -3.6
        + CONVERSION_UPLIFT * effective.sum(axis=1)
        + 0.5 * campaign_interest.sum(axis=1)
        + 0.25 * np.minimum(mall_visits, 5)
        + 0.3 * np.minimum(campaign_visits, 3).sum(axis=1)
        + 0.45 * u.wealth
        + 0.3 * (tenure > 365)
        + _AGE_CONVERSION[u.age]
        + 0.4 * u.ta.sum(axis=1)
    )
    converted = rng.random(u.size) < _sigmoid(logit)
    rate = (
        0.15 + 0.25 * np.exp(0.3 * u.wealth) + 0.35 * campaign_visits.sum(axis=1) + 1.2 * converted
    )
    purchases = rng.poisson(rate)
    p_repeat = _sigmoid(-0.8 + 0.6 * np.log1p(purchases) + 0.4 * (tenure > 365) + 0.3 * u.wealth)
    repeat = (purchases > 0) & (rng.random(u.size) < p_repeat)
    return Outcomes(past_spend, tenure, converted, purchases, repeat)


def _members(u: Universe, party: str, rng: np.random.Generator) -> np.ndarray:
    """Person indices of one party, in a party-specific (shuffled) row order."""
    idx = np.flatnonzero(u.member[party])
    return idx[rng.permutation(len(idx))]


def retailer_table(u: Universe, out: Outcomes, rng: np.random.Generator) -> pd.DataFrame:
    """One row per retailer customer."""
    idx = _members(u, "retailer", rng)
    frame = pd.DataFrame(
        {
            "user_id": u.ids[idx],
            "purchases": out.purchases[idx],
            "repeat_purchase": out.repeat[idx],
            "converted": out.converted[idx].astype(np.int64),
            "past_spend": out.past_spend[idx],
            "tenure_days": out.tenure_days[idx],
            "age_band": np.array(AGE_BANDS, dtype=object)[u.age[idx]],
        }
    )
    for k, label in enumerate(TA_LABELS):
        frame[f"ta_{label}"] = u.ta[idx, k].astype(np.int64)
    return frame


def media_table(
    u: Universe, exposed: np.ndarray, district_ids: np.ndarray, rng: np.random.Generator
) -> pd.DataFrame:
    """One row per media-owner user: exposures, interests and engagement."""
    n = u.size
    young = np.isin(u.age, [0, 1]).astype(float)
    engagement = rng.gamma(3.0, 1.0 / 3.0, n) * (1 + 0.4 * young)
    impressions = rng.poisson(20 * engagement + 12 * exposed.sum(axis=1))
    sessions = np.round(rng.gamma(2.0, 3.0, n) * engagement, 1)
    minutes = np.round(rng.lognormal(np.log(6.0), 0.5, n) * (1 + 0.5 * young), 1)
    click_rate = np.round(rng.beta(2, 60, n) * (1 + 0.5 * u.interest.sum(axis=1)), 4)
    idx = _members(u, "media", rng)
    frame = pd.DataFrame(
        {
            "user_id": u.ids[idx],
            "exposure_district_id": district_ids[u.home_district[idx]],
        }
    )
    for k, campaign in enumerate(CAMPAIGNS):
        frame[f"exposed_{campaign}"] = exposed[idx, k].astype(np.int64)
    frame["n_impressions"] = impressions[idx]
    for k, tag in enumerate(INTERESTS):
        frame[f"interest_{tag}"] = u.interest[idx, k].astype(np.int64)
    frame["sessions_per_week"] = sessions[idx]
    frame["avg_session_minutes"] = minutes[idx]
    frame["click_rate"] = click_rate[idx]
    return frame


def visits_table(u: Universe, log: VisitLog, pois: pd.DataFrame) -> pd.DataFrame:
    """Visits of operator subscribers, one row per visit, sorted by user and time."""
    keep = u.member["operator"][log.person]
    dates = pd.Timestamp(WINDOW_START) + pd.to_timedelta(np.arange(len(WEEKEND)), unit="D")
    return pd.DataFrame(
        {
            "user_id": u.ids[log.person[keep]],
            "poi_id": pois["poi_id"].to_numpy()[log.poi[keep]],
            "visit_date": np.array([d.date() for d in dates], dtype=object)[log.day[keep]],
            "hour": log.hour[keep].astype(np.int64),
            "dwell_minutes": log.dwell[keep],
        }
    )


def _per_person(person: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    return np.bincount(person, weights=weights, minlength=n).astype(float)


def operator_table(
    u: Universe,
    log: VisitLog,
    pois: pd.DataFrame,
    district_ids: np.ndarray,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Per-subscriber features the operator derives from its own visit records."""
    n, p = u.size, log.person
    x, y = to_km(pois["lon"].to_numpy(), pois["lat"].to_numpy())
    category = pois["category"].to_numpy()[log.poi]
    poi_district = pois["district_id"].to_numpy()
    visits = _per_person(p, n)
    safe = np.maximum(visits, 1)
    pairs = np.unique(np.column_stack([p, log.poi]), axis=0)
    zones = pd.DataFrame({"p": p, "d": poi_district[log.poi]}).drop_duplicates()
    home, here = u.home_poi[p], log.poi
    home_km = np.hypot(x[home] - x[here], y[home] - y[here])
    frame = pd.DataFrame(
        {
            "user_id": u.ids,
            "home_district_id": district_ids[u.home_district],
            "work_district_id": poi_district[u.work_poi],
            "n_visits": visits.astype(np.int64),
            "distinct_pois": np.bincount(pairs[:, 0], minlength=n),
            "distinct_districts": np.bincount(zones["p"].to_numpy(), minlength=n),
            "mall_visits": _per_person(p[category == "mall"], n).astype(np.int64),
            "store_visits": _per_person(p[category == "store"], n).astype(np.int64),
            "night_share": np.round(_per_person(p, n, np.isin(log.hour, NIGHT_HOURS)) / safe, 4),
            "weekend_share": np.round(_per_person(p, n, WEEKEND[log.day]) / safe, 4),
            "avg_dwell_minutes": np.round(_per_person(p, n, log.dwell) / safe, 1),
            "radius_km": np.round(_per_person(p, n, home_km) / safe, 3),
            "arpu": np.round(np.exp(3.6 + 0.3 * u.wealth + rng.normal(0, 0.25, n)), 2),
            "data_gb": np.round(rng.gamma(2.0, 6.0, n) * (1.3 - 0.1 * u.age), 2),
        }
    )
    idx = _members(u, "operator", rng)
    return frame.iloc[idx].reset_index(drop=True)


#: share of POIs with a retailer door counter, and the counters' multiplicative error
COUNTED_SHARE = 0.6
COUNTER_ERROR = 0.05


def footfall_tables(
    log: VisitLog, pois: pd.DataFrame, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(retailer footfall counts, true crowd per POI).

    The true crowd is every person's visits per day over the window (all persons, not only
    a party's). The retailer counts footfall with door counters at a random ~60% of POIs
    (its stores, the malls it rents in, partner venues), each count off by a few percent.
    Draws come from their own generator, so the other tables do not change.
    """
    rng = np.random.default_rng([int(seed), 0xF00])
    per_day = np.bincount(log.poi, minlength=len(pois)) / WINDOW_DAYS
    true = pd.DataFrame({"poi_id": pois["poi_id"].to_numpy(),
                         "visits_per_day": per_day.round(4)})
    counted = np.flatnonzero(rng.random(len(pois)) < COUNTED_SHARE)
    noise = rng.lognormal(0.0, COUNTER_ERROR, len(counted))
    counts = pd.DataFrame({"poi_id": pois["poi_id"].to_numpy()[counted],
                           "footfall_per_day": (per_day[counted] * noise).round(2)})
    return counts, true
