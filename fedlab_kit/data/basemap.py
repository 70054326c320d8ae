"""An offline vector basemap of the sample city: water and roads, drawn under the data.

The synthetic city has no real streets, so the basemap is made from its district polygons
alone (no randomness, so it never changes the generated data): a river across the city, a
lake, a ring road, an inner ring and avenues from the centre. It is a backdrop that makes
maps readable without tiles; for a real city, point :func:`fedlab_kit.maps.base_map` at a
tile server instead (see the README, *Maps*).
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely
from shapely.geometry import LineString, Point

from .geography import CENTRE_LAT, CENTRE_LON, KM_PER_DEG_LAT, KM_PER_DEG_LON

#: (kind, class) of each feature; maps style them by these two properties
KINDS = {("water", "river"), ("water", "lake"), ("road", "motorway"), ("road", "primary")}
AVENUES = 8


def _to_km(geom: shapely.Geometry) -> shapely.Geometry:
    return shapely.transform(geom, lambda xy: np.column_stack(
        [(xy[:, 0] - CENTRE_LON) * KM_PER_DEG_LON, (xy[:, 1] - CENTRE_LAT) * KM_PER_DEG_LAT]))


def _to_degrees(geom: shapely.Geometry) -> shapely.Geometry:
    return shapely.transform(geom, lambda xy: np.column_stack(
        [CENTRE_LON + xy[:, 0] / KM_PER_DEG_LON, CENTRE_LAT + xy[:, 1] / KM_PER_DEG_LAT])
        .round(6))


def make_basemap(districts: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Water and roads inside the city the ``districts`` cover (EPSG:4326 in and out)."""
    city = _to_km(shapely.union_all(districts.to_crs(4326).geometry.to_numpy()))
    radius = float(np.sqrt(city.area / np.pi))
    centre = city.centroid
    cx, cy = centre.x, centre.y
    xs = np.linspace(-1.3 * radius, 1.3 * radius, 200)
    river = LineString(np.column_stack([cx + xs, cy - 0.15 * radius
                                        + 0.12 * radius * np.sin(xs / (0.3 * radius))]))
    rows = [("water", "river", "River", river.buffer(0.025 * radius)),
            ("water", "lake", "Lake", Point(cx - 0.55 * radius, cy - 0.35 * radius)
             .buffer(0.09 * radius)),
            ("road", "motorway", "Ring road", Point(cx, cy).buffer(0.6 * radius).exterior),
            ("road", "primary", "Inner ring", Point(cx, cy).buffer(0.25 * radius).exterior)]
    for k in range(AVENUES):
        angle = 2 * np.pi * (k + 0.5) / AVENUES
        end = (cx + 1.3 * radius * np.cos(angle), cy + 1.3 * radius * np.sin(angle))
        rows.append(("road", "primary", f"Avenue {k + 1}", LineString([(cx, cy), end])))
    inside = city.buffer(-0.01 * radius)
    clipped = [(kind, cls, name, geom.intersection(inside)) for kind, cls, name, geom in rows]
    clipped = [r for r in clipped if not r[3].is_empty]
    return gpd.GeoDataFrame(
        {"kind": [r[0] for r in clipped], "class": [r[1] for r in clipped],
         "name": [r[2] for r in clipped]},
        geometry=[_to_degrees(r[3]) for r in clipped], crs=4326)
