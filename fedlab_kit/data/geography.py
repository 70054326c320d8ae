"""Synthetic city geography: boundary, districts, points of interest and campaign sites.

Everything is built in a local kilometre plane centred on the city centre and converted
to WGS84 longitude/latitude at the end. All randomness comes from the ``rng`` argument.
"""

from __future__ import annotations

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import MultiPoint, Polygon

from fedlab_kit.errors import InternalError

CENTRE_LAT = 31.23
CENTRE_LON = 121.47
KM_PER_DEG_LAT = 110.574
KM_PER_DEG_LON = 111.320 * float(np.cos(np.radians(CENTRE_LAT)))
CITY_RADIUS_KM = 12.0
COORD_DECIMALS = 6

DISTRICT_NAMES = (
    "Central",
    "Old Town",
    "Riverside",
    "Harbour",
    "Parkview",
    "Lakeside",
    "Westgate",
    "Northfield",
    "Eastbank",
    "Southport",
    "Hillcrest",
    "Greenway",
)
CATEGORIES = ("mall", "store", "office", "residence", "restaurant", "transit")
CATEGORY_SHARE = {
    "mall": 0.05,
    "store": 0.20,
    "office": 0.15,
    "residence": 0.30,
    "restaurant": 0.20,
    "transit": 0.10,
}
CATEGORY_LABEL = {
    "mall": "Plaza",
    "store": "Store",
    "office": "Tower",
    "residence": "Residences",
    "restaurant": "Kitchen",
    "transit": "Station",
}
# (share drawn around the city centre, radial scale km, spread around district centres km)
CATEGORY_SPREAD = {
    "mall": (0.35, 3.0, 1.0),
    "store": (0.45, 3.5, 1.4),
    "office": (0.75, 2.2, 1.0),
    "residence": (0.25, 6.0, 1.8),
    "restaurant": (0.50, 3.5, 1.4),
    "transit": (0.40, 4.5, 1.6),
}


def to_lonlat(x_km: np.ndarray, y_km: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convert local kilometre coordinates to (lon, lat) degrees."""
    return CENTRE_LON + x_km / KM_PER_DEG_LON, CENTRE_LAT + y_km / KM_PER_DEG_LAT


def to_km(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convert (lon, lat) degrees to local kilometre coordinates."""
    lon = np.asarray(lon, dtype=float)
    lat = np.asarray(lat, dtype=float)
    return (lon - CENTRE_LON) * KM_PER_DEG_LON, (lat - CENTRE_LAT) * KM_PER_DEG_LAT


def distance_km(
    lon_a: np.ndarray, lat_a: np.ndarray, lon_b: np.ndarray, lat_b: np.ndarray
) -> np.ndarray:
    """Pairwise planar distances in km between points a (rows) and points b (columns)."""
    xa, ya = to_km(lon_a, lat_a)
    xb, yb = to_km(lon_b, lat_b)
    return np.hypot(xa[:, None] - xb[None, :], ya[:, None] - yb[None, :])


def _km_polygon_to_lonlat(geom: shapely.Geometry) -> shapely.Geometry:
    """Project a km-plane geometry to lon/lat and snap it to the coordinate grid."""

    def project(coords: np.ndarray) -> np.ndarray:
        lon, lat = to_lonlat(coords[:, 0], coords[:, 1])
        return np.column_stack([lon, lat])

    return shapely.set_precision(shapely.transform(geom, project), 10.0**-COORD_DECIMALS)


def make_boundary(rng: np.random.Generator) -> Polygon:
    """An irregular, roughly circular city boundary (km plane)."""
    theta = np.linspace(0.0, 2 * np.pi, 96, endpoint=False)
    radius = np.ones_like(theta)
    for k in (2, 3, 5):
        radius += rng.uniform(0.02, 0.05) * np.sin(k * theta + rng.uniform(0, 2 * np.pi))
    radius *= CITY_RADIUS_KM
    return Polygon(np.column_stack([radius * np.cos(theta), radius * np.sin(theta)]))


def _district_centres(n: int, rng: np.random.Generator) -> np.ndarray:
    """District centres in km: one near the middle, an inner and an outer ring."""
    n_inner = max(3, round((n - 1) * 0.4))
    n_outer = n - 1 - n_inner
    rings = []
    for count, radius in ((n_inner, 4.0), (n_outer, 8.3)):
        angle = np.arange(count) * 2 * np.pi / count + rng.uniform(0, 2 * np.pi)
        angle += rng.uniform(-0.15, 0.15, count)
        r = radius + rng.uniform(-0.6, 0.6, count)
        rings.append(np.column_stack([r * np.cos(angle), r * np.sin(angle)]))
    centre = rng.uniform(-0.5, 0.5, (1, 2))
    return np.vstack([centre, *rings])


def make_districts(n: int, rng: np.random.Generator) -> tuple[gpd.GeoDataFrame, Polygon]:
    """Voronoi districts clipped to the city boundary; returns (districts, boundary) in lon/lat."""
    boundary_km = make_boundary(rng)
    centres = _district_centres(n, rng)
    cells = np.asarray(
        shapely.get_parts(shapely.voronoi_polygons(MultiPoint(centres), extend_to=boundary_km))
    )
    # match each centre to its cell (``ordered=`` needs shapely >= 2.1)
    owner = shapely.contains(cells[None, :], shapely.points(centres)[:, None]).argmax(axis=1)
    polys_km = [cells[i].intersection(boundary_km) for i in owner]
    geoms = [_km_polygon_to_lonlat(p) for p in polys_km]
    lon, lat = to_lonlat(centres[:, 0], centres[:, 1])
    frame = pd.DataFrame(
        {
            "district_id": [f"D{i + 1:02d}" for i in range(n)],
            "name": list(DISTRICT_NAMES[:n]),
            "centre_lat": np.round(lat, COORD_DECIMALS),
            "centre_lon": np.round(lon, COORD_DECIMALS),
            "area_km2": np.round([p.area for p in polys_km], 3),
        }
    )
    districts = gpd.GeoDataFrame(frame, geometry=geoms, crs="EPSG:4326")
    boundary = _km_polygon_to_lonlat(boundary_km)
    return districts, boundary


def category_counts(n_pois: int, n_campaigns: int) -> dict[str, int]:
    """How many POIs of each category; every category appears, stores cover every campaign."""
    minimum = dict.fromkeys(CATEGORIES, 1)
    minimum["store"] = n_campaigns
    counts = {c: max(minimum[c], int(CATEGORY_SHARE[c] * n_pois)) for c in CATEGORIES}
    counts["residence"] += n_pois - sum(counts.values())
    return counts


def _sample_locations(
    category: str, count: int, centres_km: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Candidate km locations for one category: centre-weighted plus district clusters."""
    share_centre, radial_scale, spread = CATEGORY_SPREAD[category]
    from_centre = rng.random(count) < share_centre
    angle = rng.uniform(0, 2 * np.pi, count)
    radius = rng.gamma(1.6, radial_scale / 1.6, count)
    around = centres_km[rng.integers(0, len(centres_km), count)]
    around = around + rng.normal(0.0, spread, (count, 2))
    radial = np.column_stack([radius * np.cos(angle), radius * np.sin(angle)])
    return np.where(from_centre[:, None], radial, around)


def _assign_district(lon: np.ndarray, lat: np.ndarray, districts: gpd.GeoDataFrame) -> np.ndarray:
    """Index of the district strictly containing each point, -1 if none."""
    out = np.full(len(lon), -1, dtype=np.int64)
    for i, geom in enumerate(districts.geometry):
        inside = shapely.contains_xy(geom, lon, lat) & (out < 0)
        out[inside] = i
    return out


def place_points(
    category: str, count: int, districts: gpd.GeoDataFrame, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rounded (lon, lat, district index) for ``count`` POIs, each strictly inside a district."""
    centres_km = np.column_stack(to_km(districts["centre_lon"], districts["centre_lat"]))
    lon = np.empty(count)
    lat = np.empty(count)
    district = np.full(count, -1, dtype=np.int64)
    todo = np.arange(count)
    for _ in range(200):
        if todo.size == 0:
            break
        xy = _sample_locations(category, todo.size, centres_km, rng)
        lo, la = to_lonlat(xy[:, 0], xy[:, 1])
        lon[todo] = np.round(lo, COORD_DECIMALS)
        lat[todo] = np.round(la, COORD_DECIMALS)
        district[todo] = _assign_district(lon[todo], lat[todo], districts)
        todo = todo[district[todo] < 0]
    if todo.size:
        raise InternalError("could not place POIs inside the city boundary")
    return lon, lat, district


def h3_cells(lat: pd.Series, lon: pd.Series, resolution: int) -> list[str]:
    """H3 cell id (v4 string form) of each point at ``resolution``."""
    pairs = zip(lat.to_numpy(), lon.to_numpy(), strict=True)
    return [h3.latlng_to_cell(float(a), float(b), resolution) for a, b in pairs]


def make_pois(
    n_pois: int, n_campaigns: int, districts: gpd.GeoDataFrame, rng: np.random.Generator
) -> pd.DataFrame:
    """POI table with ids, names, categories, coordinates, district and H3 cells."""
    parts = []
    for category, count in category_counts(n_pois, n_campaigns).items():
        lon, lat, district = place_points(category, count, districts, rng)
        parts.append(
            pd.DataFrame({"category": category, "lon": lon, "lat": lat, "district": district})
        )
    pois = pd.concat(parts, ignore_index=True)
    pois = pois.iloc[rng.permutation(len(pois))].reset_index(drop=True)
    width = max(5, len(str(len(pois))))
    pois.insert(0, "poi_id", [f"p{i + 1:0{width}d}" for i in range(len(pois))])
    pois["district_id"] = districts["district_id"].to_numpy()[pois["district"]]
    number = pois.groupby(["district", "category"]).cumcount() + 1
    district_name = districts["name"].to_numpy()[pois["district"]]
    label = pois["category"].map(CATEGORY_LABEL)
    pois.insert(1, "name", district_name + " " + label + " " + number.astype(str))
    pois["h3_r8"] = h3_cells(pois["lat"], pois["lon"], 8)
    pois["h3_r9"] = h3_cells(pois["lat"], pois["lon"], 9)
    pois["capacity"] = np.round(rng.lognormal(0.0, 0.6, len(pois)), 3)
    columns = [
        "poi_id",
        "name",
        "category",
        "lat",
        "lon",
        "district_id",
        "h3_r8",
        "h3_r9",
        "capacity",
    ]
    return pois[columns]


def _spread_pick(candidates: pd.DataFrame, count: int, rng: np.random.Generator) -> list[int]:
    """Pick ``count`` row positions, cycling over districts so sites are spread out."""
    order = rng.permutation(len(candidates))
    shuffled = candidates.iloc[order]
    rank = shuffled.groupby("district_id").cumcount().to_numpy()
    picked = order[np.lexsort((rng.random(len(order)), rank))]
    return [int(p) for p in picked[:count]]


def make_campaign_sites(
    pois: pd.DataFrame, campaigns: dict[str, str], n_districts: int, rng: np.random.Generator
) -> pd.DataFrame:
    """Stores promoting each campaign and billboard sites (transit stops and malls)."""
    stores = pois.index[pois["category"] == "store"].to_numpy()
    sites = pois.index[pois["category"].isin(["transit", "mall"])].to_numpy()
    per_campaign = max(1, round(0.3 * len(stores) / len(campaigns)))
    store_order = _spread_pick(pois.loc[stores], len(stores), rng)
    rows = []
    for k, (campaign, industry) in enumerate(campaigns.items()):
        own = stores[store_order[k :: len(campaigns)][:per_campaign]]
        boards = sites[_spread_pick(pois.loc[sites], min(len(sites), n_districts), rng)]
        rows += [(campaign, industry, "store", pois.at[i, "poi_id"]) for i in own]
        rows += [(campaign, industry, "billboard", pois.at[i, "poi_id"]) for i in boards]
    frame = pd.DataFrame(rows, columns=["campaign", "industry", "role", "poi_id"])
    return frame.sort_values(["campaign", "role", "poi_id"], ignore_index=True)
