"""Locate and load the shipped sample city (persons=20000, seed=7).

In an installed wheel the sample lives in ``fedlab_kit/_sample_data``; in a source checkout
it is ``<repo root>/datasets/sample``. ``FEDLAB_SAMPLE_DIR`` points every loader (and so
every notebook and demo party) at another directory written by ``write_city`` or
``fedlab datasets make``; each loader also accepts ``root`` for one call.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd

from fedlab_kit.errors import InputError

PARTY_FILES = {
    "retailer": "retailer.parquet",
    "media": "media.parquet",
    "operator": "operator_users.parquet",
}
OTHER_FILES = {"footfall": "retailer_footfall.parquet"}
TRUTH_FILES = {
    "crowd": "truth/crowd_truth.parquet",
    "funnel": "truth/funnel_truth.parquet",
    "poi_crowd": "truth/poi_crowd_truth.parquet",
    "persons": "truth/persons.parquet",
    "effect": "truth/effect_truth.json",
    "meta": "truth/meta.json",
}
_MARKER = "pois.parquet"
ENV_VAR = "FEDLAB_SAMPLE_DIR"


def _packaged_dir() -> Path | None:
    """The sample shipped inside the installed package, if present on disk."""
    try:
        candidate = resources.files("fedlab_kit") / "_sample_data"
    except (ModuleNotFoundError, TypeError):
        return None
    path = Path(str(candidate))
    return path if (path / _MARKER).is_file() else None


def _checkout_dir() -> Path | None:
    """``<repo root>/datasets/sample`` of a source checkout, if present."""
    path = Path(__file__).resolve().parents[2] / "datasets" / "sample"
    return path if (path / _MARKER).is_file() else None


def sample_dir() -> Path:
    """Directory of the sample: ``$FEDLAB_SAMPLE_DIR`` if set, else the shipped one;
    FileNotFoundError if it cannot be found."""
    chosen = os.environ.get(ENV_VAR, "").strip()
    if chosen:
        path = Path(chosen).expanduser()
        if not (path / _MARKER).is_file():
            raise FileNotFoundError(
                f"{ENV_VAR}={chosen!r} is not a sample city: it has no {_MARKER}. Write one "
                f"with `fedlab datasets make --persons 5000 --out {chosen}`, or unset "
                f"{ENV_VAR} to use the shipped sample.")
        return path
    for found in (_packaged_dir(), _checkout_dir()):
        if found is not None:
            return found
    raise FileNotFoundError(
        "the fedlab-kit sample data set was not found: looked for fedlab_kit/_sample_data "
        "(installed wheel) and datasets/sample next to the package (source checkout). "
        "Regenerate it with `python datasets/make_sample.py` or "
        "`fedlab datasets make --persons 20000 --seed 7 --out datasets/sample`."
    )


def _root(root: str | Path | None) -> Path:
    return sample_dir() if root is None else Path(root)


def load_sample(party: str, root: str | Path | None = None) -> pd.DataFrame:
    """One party's table: "retailer", "media" or "operator" (per-user operator features)."""
    if party not in PARTY_FILES:
        valid = ", ".join(repr(p) for p in PARTY_FILES)
        raise InputError(f"unknown party {party!r}; valid parties are {valid}")
    return pd.read_parquet(_root(root) / PARTY_FILES[party])


def load_sample_visits(root: str | Path | None = None) -> pd.DataFrame:
    """The operator's visit table (one row per visit)."""
    return pd.read_parquet(_root(root) / "operator_visits.parquet")


def load_footfall(root: str | Path | None = None) -> pd.DataFrame:
    """The retailer's door-counter footfall per day at the POIs it counts."""
    return pd.read_parquet(_root(root) / OTHER_FILES["footfall"])


def load_pois(root: str | Path | None = None) -> pd.DataFrame:
    """The points of interest."""
    return pd.read_parquet(_root(root) / "pois.parquet")


def load_campaigns(root: str | Path | None = None) -> pd.DataFrame:
    """Campaign sites: each campaign's stores and billboard POIs."""
    return pd.read_parquet(_root(root) / "campaigns.parquet")


def load_districts(root: str | Path | None = None) -> gpd.GeoDataFrame:
    """District polygons (EPSG:4326)."""
    return gpd.read_file(_root(root) / "districts.geojson")


def load_basemap(root: str | Path | None = None) -> gpd.GeoDataFrame:
    """The city's offline vector basemap (water and roads; EPSG:4326): the shipped file, or
    made from the districts of a folder written before basemaps existed."""
    path = _root(root) / "basemap.geojson"
    if path.is_file():
        return gpd.read_file(path)
    from fedlab_kit.data.basemap import make_basemap

    return make_basemap(load_districts(root))


def load_truth(name: str, root: str | Path | None = None) -> pd.DataFrame | dict[str, Any]:
    """A ground-truth table ("crowd", "funnel", "persons") or JSON ("effect", "meta")."""
    if name not in TRUTH_FILES:
        valid = ", ".join(repr(t) for t in TRUTH_FILES)
        raise InputError(f"unknown truth {name!r}; valid names are {valid}")
    path = _root(root) / TRUTH_FILES[name]
    if path.suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
    return pd.read_parquet(path)
