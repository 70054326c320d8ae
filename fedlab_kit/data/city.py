"""Generate a synthetic city with three parties' data and known ground truth.

``make_city`` builds everything in memory from ``numpy.random.default_rng(seed)`` alone, so
the same arguments give identical frames and, through ``write_city``, byte-identical files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry import Polygon

from fedlab_kit.data import geography, parties, people, truth, visits
from fedlab_kit.data.basemap import make_basemap
from fedlab_kit.data.people import CAMPAIGNS, PARTY_SHARE
from fedlab_kit.errors import InputError, InputTypeError

GENERATOR_VERSION = "1.1.0"
MIN_PERSONS = 100
MIN_POIS = 10
DISTRICT_RANGE = (8, 12)
EFFECT_SHARE = 0.4
EFFECT_RANGE = (1.8, 2.6)

PARQUET_FILES = {
    "pois": "pois.parquet",
    "campaigns": "campaigns.parquet",
    "retailer": "retailer.parquet",
    "media": "media.parquet",
    "operator_users": "operator_users.parquet",
    "operator_visits": "operator_visits.parquet",
    "retailer_footfall": "retailer_footfall.parquet",
    "crowd_truth": "truth/crowd_truth.parquet",
    "poi_crowd_truth": "truth/poi_crowd_truth.parquet",
    "funnel_truth": "truth/funnel_truth.parquet",
    "persons": "truth/persons.parquet",
}
JSON_FILES = {"effect_truth": "truth/effect_truth.json", "meta": "truth/meta.json"}
GEOJSON_FILES = {"districts": "districts.geojson"}
BASEMAP_FILE = "basemap.geojson"


@dataclass
class City:
    """A generated city: geography, the three parties' tables and the ground truth."""

    districts: gpd.GeoDataFrame
    boundary: Polygon
    pois: pd.DataFrame
    campaigns: pd.DataFrame
    retailer: pd.DataFrame
    media: pd.DataFrame
    operator_users: pd.DataFrame
    operator_visits: pd.DataFrame
    persons: pd.DataFrame
    crowd_truth: pd.DataFrame
    funnel_truth: pd.DataFrame
    retailer_footfall: pd.DataFrame
    poi_crowd_truth: pd.DataFrame
    effect_truth: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def _check_int(name: str, value: object, minimum: int) -> None:
    """Raise InputError (a ValueError) unless ``value`` is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise InputError(f"{name} must be at least {minimum}, got {value}")


def validate_args(persons: int, seed: int, n_pois: int, n_districts: int) -> None:
    """Check ``make_city`` arguments, raising InputError (a ValueError) with a clear message."""
    _check_int("persons", persons, MIN_PERSONS)
    _check_int("seed", seed, 0)
    _check_int("n_pois", n_pois, MIN_POIS)
    _check_int("n_districts", n_districts, DISTRICT_RANGE[0])
    if n_districts > DISTRICT_RANGE[1]:
        raise InputError(f"n_districts must be at most {DISTRICT_RANGE[1]}, got {n_districts}")


def _plant_effects(
    district_ids: list[str], rng: np.random.Generator
) -> dict[str, dict[str, float]]:
    """Per campaign, the visit-rate multiplier of exposed persons in each district (1 = none)."""
    n = len(district_ids)
    k = min(n - 1, max(1, round(EFFECT_SHARE * n)))
    effects = {}
    for campaign in CAMPAIGNS:
        chosen = set(rng.choice(n, size=k, replace=False).tolist())
        size = np.round(rng.uniform(*EFFECT_RANGE, n), 2)
        effects[campaign] = {
            d: float(size[i]) if i in chosen else 1.0 for i, d in enumerate(district_ids)
        }
    return effects


def _effect_json(multiplier: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The planted effects in a self-describing JSON-ready form."""
    campaigns = {}
    for campaign, industry in CAMPAIGNS.items():
        mult = multiplier[campaign]
        campaigns[campaign] = {
            "industry": industry,
            "effect_districts": sorted(d for d, m in mult.items() if m > 1.0),
            "no_effect_districts": sorted(d for d, m in mult.items() if m == 1.0),
            "visit_rate_multiplier": mult,
            "conversion_logit_uplift": {
                d: (parties.CONVERSION_UPLIFT if m > 1.0 else 0.0) for d, m in mult.items()
            },
        }
    return {
        "description": (
            "Exposed persons whose home district is an effect district make campaign-store "
            "trips at visit_rate_multiplier times the rate of unexposed persons and get "
            "conversion_logit_uplift on their conversion logit; elsewhere exposure has no "
            "effect. Exposure itself depends only on location (billboards near home/work) "
            "and a flat online chance, so exposed and control groups are comparable."
        ),
        "base_campaign_visit_rate": visits.CAMPAIGN_BASE_RATE,
        "interest_rate_boost": visits.CAMPAIGN_INTEREST_BOOST,
        "window_days": visits.WINDOW_DAYS,
        "campaigns": campaigns,
    }


def _persons_frame(
    u: people.Universe, pois: pd.DataFrame, exposed: np.ndarray, district_ids: np.ndarray
) -> pd.DataFrame:
    """The hidden universe: anchors, memberships and true exposure of every person."""
    poi_ids = pois["poi_id"].to_numpy()
    frame = pd.DataFrame(
        {
            "user_id": u.ids,
            "home_poi_id": poi_ids[u.home_poi],
            "work_poi_id": np.where(u.employed, poi_ids[u.work_poi], None),
            "home_district_id": district_ids[u.home_district],
            "in_retailer": u.member["retailer"],
            "in_media": u.member["media"],
            "in_operator": u.member["operator"],
        }
    )
    for k, campaign in enumerate(CAMPAIGNS):
        frame[f"exposed_{campaign}"] = exposed[:, k].astype(np.int64)
    return frame


@dataclass
class _Design:
    """The seed-only part of a city: map, POIs, campaign sites and planted effects."""

    districts: gpd.GeoDataFrame
    boundary: Polygon
    pois: pd.DataFrame
    sites: pd.DataFrame
    multiplier: dict[str, dict[str, float]]

    def positions(self, role: str) -> dict[str, np.ndarray]:
        """Per campaign, row positions in ``pois`` of its stores or billboards."""
        position = pd.Series(np.arange(len(self.pois)), index=self.pois["poi_id"])
        rows = self.sites[self.sites["role"] == role]
        return {
            c: position[rows.loc[rows["campaign"] == c, "poi_id"]].to_numpy() for c in CAMPAIGNS
        }


def _design(n_pois: int, n_districts: int, rng: np.random.Generator) -> _Design:
    """Draw everything that does not depend on the number of persons."""
    districts, boundary = geography.make_districts(n_districts, rng)
    pois = geography.make_pois(n_pois, len(CAMPAIGNS), districts, rng)
    sites = geography.make_campaign_sites(pois, CAMPAIGNS, n_districts, rng)
    multiplier = _plant_effects(list(districts["district_id"]), rng)
    return _Design(districts, boundary, pois, sites, multiplier)


def make_city(
    persons: int = 100_000, seed: int = 7, n_pois: int = 600, n_districts: int = 10
) -> City:
    """Generate a synthetic city with ``persons`` people and ``n_pois`` POIs.

    Raises :class:`~fedlab_kit.errors.InputError` (a ValueError) for persons < 100,
    n_pois < 10, a negative seed or n_districts outside 8..12.
    """
    validate_args(persons, seed, n_pois, n_districts)
    rng = np.random.default_rng(int(seed))
    world = _design(int(n_pois), int(n_districts), rng)
    pois, district_ids = world.pois, world.districts["district_id"].to_numpy()
    u = people.make_universe(int(persons), pois, {d: i for i, d in enumerate(district_ids)}, rng)
    exposed = people.exposure(u, pois, world.positions("billboard"), rng)
    mult = np.array([[world.multiplier[c][d] for d in district_ids] for c in CAMPAIGNS])
    stores = list(world.positions("store").values())
    log = visits.simulate_visits(u, pois, stores, exposed, mult, rng)
    malls = visits.category_counts_per_person(log, pois, u.size, "mall")
    outcome = parties.simulate_outcomes(u, exposed, mult > 1.0, malls, log.campaign_visits, rng)
    retailer = parties.retailer_table(u, outcome, rng)
    media = parties.media_table(u, exposed, district_ids, rng)
    users = parties.operator_table(u, log, pois, district_ids, rng)
    visit_rows = parties.visits_table(u, log, pois)
    footfall, poi_crowd = parties.footfall_tables(log, pois, int(seed))
    city = City(
        districts=world.districts,
        boundary=world.boundary,
        pois=pois,
        campaigns=world.sites,
        retailer=retailer,
        media=media,
        operator_users=users,
        operator_visits=visit_rows,
        persons=_persons_frame(u, pois, exposed, district_ids),
        crowd_truth=truth.crowd_truth(retailer, visit_rows, pois),
        funnel_truth=truth.funnel_truth(
            retailer, media, users, visit_rows, world.sites, list(district_ids), world.multiplier
        ),
        retailer_footfall=footfall,
        poi_crowd_truth=poi_crowd,
        effect_truth=_effect_json(world.multiplier),
    )
    args = {"persons": persons, "seed": seed, "n_pois": n_pois, "n_districts": n_districts}
    city.meta = _meta(city, **{k: int(v) for k, v in args.items()})
    return city


def _meta(city: City, **args: int) -> dict[str, Any]:
    """Generation parameters, populations used by the truth tables and row counts."""
    rows = {name: len(getattr(city, name)) for name in [*PARQUET_FILES, *GEOJSON_FILES]}
    return {
        "generator": "fedlab_kit.data.make_city",
        "generator_version": GENERATOR_VERSION,
        **args,
        "centre": {"lat": geography.CENTRE_LAT, "lon": geography.CENTRE_LON},
        "window_start": visits.WINDOW_START,
        "window_days": visits.WINDOW_DAYS,
        "campaigns": dict(CAMPAIGNS),
        "party_share": dict(PARTY_SHARE),
        "truth_population": {
            "crowd_truth": "persons present at both the retailer and the operator",
            "funnel_truth": "persons present at the retailer, the media owner and the operator",
            "poi_crowd_truth": "every person (visits per day per POI)",
        },
        "rows": rows,
    }


def write_city(city: City, out_dir: str | Path) -> dict[str, Path]:
    """Write every table of ``city`` under ``out_dir``; returns {name: path}."""
    out = Path(out_dir)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, rel in GEOJSON_FILES.items():
        paths[name] = out / rel
        text = getattr(city, name).to_json(drop_id=True, show_bbox=False)
        paths[name].write_text(text + "\n", encoding="utf-8")
    paths["basemap"] = out / BASEMAP_FILE  # made from the districts: no randomness
    text = make_basemap(city.districts).to_json(drop_id=True, show_bbox=False)
    paths["basemap"].write_text(text + "\n", encoding="utf-8")
    for name, rel in PARQUET_FILES.items():
        paths[name] = out / rel
        getattr(city, name).to_parquet(
            paths[name], index=False, engine="pyarrow", compression="zstd"
        )
    for name, rel in JSON_FILES.items():
        paths[name] = out / rel
        text = json.dumps(getattr(city, name), indent=2, sort_keys=True)
        paths[name].write_text(text + "\n", encoding="utf-8")
    return paths


def make_and_write(
    persons: int, seed: int, out_dir: str | Path, n_pois: int = 600
) -> dict[str, Path]:
    """Generate a city and write it under ``out_dir``; returns {name: path} of every file."""
    city = make_city(persons=persons, seed=seed, n_pois=n_pois)
    return write_city(city, out_dir)
