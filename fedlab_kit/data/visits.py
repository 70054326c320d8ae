"""Visits of persons to POIs over a 14-day window, as a mobile operator would record them.

Visits come from independent Poisson streams per person: stays at home, at work, routine
trips near home or work, mall trips (more for target-audience persons) and trips to each
campaign's stores (more for exposed persons living in a district where the campaign works).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedlab_kit.data.geography import CATEGORIES, distance_km
from fedlab_kit.data.people import CAMPAIGNS, INTERESTS, Universe, sample_rows, to_cdf

WINDOW_DAYS = 14
WINDOW_START = "2024-03-04"  # a Monday
WEEKEND = np.array([d % 7 >= 5 for d in range(WINDOW_DAYS)])
NIGHT_HOURS = (22, 23, 0, 1, 2, 3, 4, 5)
CAMPAIGN_BASE_RATE = 0.15
CAMPAIGN_INTEREST_BOOST = 1.5

# daily-rhythm bumps per category: (peak hour, width, weight); plus a flat floor
_HOUR_PEAKS = {
    "mall": ([(15, 3.0, 1.0), (20, 1.5, 0.6)], 0.01),
    "store": ([(11, 2.0, 0.7), (17, 3.0, 1.0)], 0.01),
    "office": ([(10, 2.0, 1.0), (15, 2.0, 1.0)], 0.01),
    "residence": ([(21, 3.0, 1.0), (7, 1.5, 0.4), (1, 2.0, 0.3)], 0.05),
    "restaurant": ([(12, 1.0, 1.0), (19, 1.5, 1.0)], 0.02),
    "transit": ([(8, 1.0, 1.0), (18, 1.0, 1.0)], 0.05),
}
_WEEKEND_WEIGHT = {
    "mall": 1.6,
    "store": 1.6,
    "office": 0.1,
    "residence": 1.2,
    "restaurant": 1.6,
    "transit": 0.6,
}
_DWELL_MEDIAN = {
    "mall": 80,
    "store": 25,
    "office": 240,
    "residence": 180,
    "restaurant": 50,
    "transit": 10,
}
_ROUTINE_WEIGHT = {
    "mall": 0.5,
    "store": 0.8,
    "office": 0.2,
    "residence": 0.15,
    "restaurant": 1.0,
    "transit": 0.7,
}


@dataclass
class VisitLog:
    """All persons' visits (positional indices) and per-person stream counts."""

    person: np.ndarray
    poi: np.ndarray
    day: np.ndarray
    hour: np.ndarray
    dwell: np.ndarray
    campaign_visits: np.ndarray  # (n_persons, n_campaigns)


def _hour_cdf() -> np.ndarray:
    """(n_categories, 24) cumulative hour-of-day distributions."""
    hours = np.arange(24)
    rows = []
    for category in CATEGORIES:
        peaks, floor = _HOUR_PEAKS[category]
        w = np.full(24, floor)
        for peak, width, weight in peaks:
            gap = np.minimum(np.abs(hours - peak), 24 - np.abs(hours - peak))
            w = w + weight * np.exp(-0.5 * (gap / width) ** 2)
        rows.append(w)
    return to_cdf(np.array(rows))


def _day_cdf() -> np.ndarray:
    """(n_categories, 14) cumulative day-of-window distributions."""
    rows = [np.where(WEEKEND, _WEEKEND_WEIGHT[c], 1.0) for c in CATEGORIES]
    return to_cdf(np.array(rows))


def _stream(rate: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Person index repeated once per visit drawn from Poisson(rate)."""
    counts = rng.poisson(rate)
    return np.repeat(np.arange(len(rate)), counts)


def _nearby(
    anchor: np.ndarray,
    targets: np.ndarray,
    weight: np.ndarray,
    scale_km: float,
    pois: pd.DataFrame,
    rng: np.random.Generator,
) -> np.ndarray:
    """For each anchor POI, draw a target POI with weight * exp(-distance / scale)."""
    rows, inverse = np.unique(anchor, return_inverse=True)
    lon, lat = pois["lon"].to_numpy(), pois["lat"].to_numpy()
    dist = distance_km(lon[rows], lat[rows], lon[targets], lat[targets])
    cdf = to_cdf(weight[None, :] * np.exp(-dist / scale_km) + 1e-12)
    return targets[sample_rows(cdf, inverse.ravel(), rng)]


def _routine(
    u: Universe, pois: pd.DataFrame, excluded: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Trips to attractive POIs near home or work (campaign stores excluded)."""
    person = _stream(1.3 * u.activity, rng)
    from_work = u.employed[person] & (rng.random(len(person)) < 0.5)
    anchor = np.where(from_work, u.work_poi[person], u.home_poi[person])
    weight = pois["category"].map(_ROUTINE_WEIGHT).to_numpy() * pois["capacity"].to_numpy()
    weight[excluded] = 0.0
    targets = np.arange(len(pois))
    return person, _nearby(anchor, targets, weight, 1.5, pois, rng)


def simulate_visits(
    u: Universe,
    pois: pd.DataFrame,
    stores: list[np.ndarray],
    exposed: np.ndarray,
    multiplier: np.ndarray,
    rng: np.random.Generator,
) -> VisitLog:
    """Simulate every person's visits; ``multiplier`` is (n_campaigns, n_districts)."""
    category = pois["category"].to_numpy()
    malls = np.flatnonzero(category == "mall")
    cap = pois["capacity"].to_numpy()
    persons, places = [], []

    home = _stream(0.7 * u.activity, rng)
    persons.append(home)
    places.append(u.home_poi[home])
    work = _stream(1.0 * u.activity * u.employed, rng)
    persons.append(work)
    places.append(u.work_poi[work])
    p, q = _routine(u, pois, np.concatenate(stores), rng)
    persons.append(p)
    places.append(q)
    mall = _stream(u.activity * (0.2 + 0.35 * u.ta.sum(axis=1)), rng)
    persons.append(mall)
    places.append(_nearby(u.home_poi[mall], malls, cap[malls], 3.0, pois, rng))
    campaign_visits = np.zeros((u.size, len(stores)), dtype=np.int64)
    industries = list(CAMPAIGNS.values())
    for k, (own, industry) in enumerate(zip(stores, industries, strict=True)):
        lift = np.where(exposed[:, k], multiplier[k, u.home_district], 1.0)
        interested = u.interest[:, INTERESTS.index(industry)]
        rate = CAMPAIGN_BASE_RATE * (1 + CAMPAIGN_INTEREST_BOOST * interested) * lift
        who = _stream(rate, rng)
        campaign_visits[:, k] = np.bincount(who, minlength=u.size)
        persons.append(who)
        places.append(_nearby(u.home_poi[who], own, np.ones(len(own)), 3.0, pois, rng))
    return _timestamp(np.concatenate(persons), np.concatenate(places), pois, campaign_visits, rng)


def _timestamp(
    person: np.ndarray,
    poi: np.ndarray,
    pois: pd.DataFrame,
    campaign_visits: np.ndarray,
    rng: np.random.Generator,
) -> VisitLog:
    """Draw day, hour and dwell for each visit and sort visits deterministically."""
    cat_index = {c: i for i, c in enumerate(CATEGORIES)}
    cat = pois["category"].map(cat_index).to_numpy()[poi]
    day = sample_rows(_day_cdf(), cat, rng)
    hour = sample_rows(_hour_cdf(), cat, rng)
    median = np.array([_DWELL_MEDIAN[c] for c in CATEGORIES], dtype=float)[cat]
    dwell = np.maximum(5, np.round(median * rng.lognormal(0.0, 0.5, len(poi)))).astype(np.int64)
    order = np.lexsort((poi, hour, day, person))
    return VisitLog(
        person=person[order],
        poi=poi[order],
        day=day[order],
        hour=hour[order],
        dwell=dwell[order],
        campaign_visits=campaign_visits,
    )


def category_counts_per_person(
    log: VisitLog, pois: pd.DataFrame, n: int, category: str
) -> np.ndarray:
    """Number of visits of each person to POIs of one category."""
    hit = pois["category"].to_numpy()[log.poi] == category
    return np.bincount(log.person[hit], minlength=n)
