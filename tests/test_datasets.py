"""Tests of the synthetic city generator (fedlab_kit.data) and the shipped sample."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import pytest
import shapely

from fedlab_kit.data import (
    City,
    load_campaigns,
    load_districts,
    load_pois,
    load_sample,
    load_sample_visits,
    load_truth,
    make_and_write,
    make_city,
    sample,
    sample_dir,
    write_city,
)

PARTIES = ("retailer", "media", "operator")
FRAMES = (
    "pois",
    "campaigns",
    "retailer",
    "media",
    "operator_users",
    "operator_visits",
    "persons",
    "crowd_truth",
    "funnel_truth",
)


@pytest.fixture(scope="module")
def city() -> City:
    return make_city(persons=2000, seed=11)


@pytest.fixture(scope="module")
def written(city: City, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("city")
    write_city(city, out)
    return out


@pytest.fixture(scope="module")
def big_city() -> City:
    return make_city(persons=20000, seed=5)


def _party_ids(c: City) -> dict[str, set[str]]:
    return {
        "retailer": set(c.retailer["user_id"]),
        "media": set(c.media["user_id"]),
        "operator": set(c.operator_users["user_id"]),
    }


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_identical_frames_and_files(tmp_path: Path) -> None:
    a = make_city(persons=500, seed=3)
    b = make_city(persons=500, seed=3)
    for name in FRAMES:
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert a.districts.geometry.geom_equals_exact(b.districts.geometry, tolerance=0).all()
    assert a.effect_truth == b.effect_truth and a.meta == b.meta
    pa = write_city(a, tmp_path / "a")
    pb = write_city(b, tmp_path / "b")
    assert pa.keys() == pb.keys()
    for key in pa:
        assert pa[key].read_bytes() == pb[key].read_bytes(), key


def test_different_seeds_differ() -> None:
    a = make_city(persons=500, seed=3)
    b = make_city(persons=500, seed=4)
    assert not a.pois[["lat", "lon"]].equals(b.pois[["lat", "lon"]])
    assert not a.retailer.equals(b.retailer)
    assert not a.operator_visits.equals(b.operator_visits)


# ---------------------------------------------------------------- parties


def test_party_ids_overlap_partially(city: City) -> None:
    ids = _party_ids(city)
    universe = set(city.persons["user_id"])
    for party, own in ids.items():
        assert own < universe, party
        assert 0.4 * len(universe) < len(own) < 0.95 * len(universe), party
        assert all(len(i) == 8 and i.startswith("u") and i[1:].isdigit() for i in own)
    for a, b in (("retailer", "media"), ("retailer", "operator"), ("media", "operator")):
        both = ids[a] & ids[b]
        assert both and both != ids[a] and both != ids[b], (a, b)
    assert ids["retailer"] & ids["media"] & ids["operator"]


def test_party_columns(city: City) -> None:
    r, m, o = city.retailer, city.media, city.operator_users
    assert {
        "user_id",
        "purchases",
        "repeat_purchase",
        "converted",
        "past_spend",
        "tenure_days",
        "age_band",
        "ta_beauty",
        "ta_auto",
        "ta_sports",
    } <= set(r.columns)
    assert set(r["converted"].unique()) <= {0, 1} and r["repeat_purchase"].dtype == bool
    assert not (r["repeat_purchase"] & (r["purchases"] == 0)).any()
    exposed = [c for c in m.columns if c.startswith("exposed_")]
    assert 2 <= len(exposed) <= 3 and {"exposure_district_id", "n_impressions"} <= set(m.columns)
    assert any(c.startswith("interest_") for c in m.columns)
    assert {"home_district_id", "n_visits", "distinct_pois", "night_share"} <= set(o.columns)
    for frame in (r, m, o):
        assert frame["user_id"].is_unique


def test_operator_features_match_visits(city: City) -> None:
    counts = city.operator_visits.groupby("user_id").size()
    users = city.operator_users.set_index("user_id")
    expected = counts.reindex(users.index, fill_value=0)
    assert (users["n_visits"] == expected).all()
    assert users["night_share"].between(0, 1).all()


def test_visits_reference_known_pois_and_operator_users(city: City) -> None:
    v = city.operator_visits
    assert v["poi_id"].isin(city.pois["poi_id"]).all()
    assert v["user_id"].isin(city.operator_users["user_id"]).all()
    assert v["hour"].between(0, 23).all() and (v["dwell_minutes"] >= 5).all()
    days = pd.to_datetime(v["visit_date"])
    assert (days.max() - days.min()).days <= 13


def test_conversion_depends_on_other_parties_features(big_city: City) -> None:
    joint = big_city.retailer.merge(big_city.media, on="user_id").merge(
        big_city.operator_users, on="user_id"
    )
    by_interest = joint.groupby(joint["interest_sports"] == 1)["converted"].mean()
    by_malls = joint.groupby(joint["mall_visits"] >= 2)["converted"].mean()
    assert by_interest[True] - by_interest[False] > 0.04
    assert by_malls[True] - by_malls[False] > 0.04


# ---------------------------------------------------------------- geography


def test_pois_inside_city_and_their_district(city: City) -> None:
    pois = city.pois
    assert len(pois) >= 600 and pois["poi_id"].is_unique
    assert set(pois["category"]) == {
        "mall",
        "store",
        "office",
        "residence",
        "restaurant",
        "transit",
    }
    points = gpd.points_from_xy(pois["lon"], pois["lat"])
    assert shapely.contains(city.boundary, np.asarray(points)).all()
    polygons = city.districts.set_index("district_id").geometry
    own = polygons.loc[pois["district_id"]].to_numpy()
    assert shapely.contains(own, np.asarray(points)).all()
    assert 8 <= len(city.districts) <= 12
    assert abs(pois["lat"] - 31.23).max() < 0.15 and abs(pois["lon"] - 121.47).max() < 0.15


def test_pois_denser_in_centre(city: City) -> None:
    d = np.hypot(city.pois["lat"] - 31.23, (city.pois["lon"] - 121.47) * 0.855)
    inner = (d < 0.03).sum() / 0.03**2
    outer = ((d >= 0.06) & (d < 0.09)).sum() / (0.09**2 - 0.06**2)
    assert inner > 2 * outer


def test_pois_h3_cells(city: City) -> None:
    pois = city.pois
    for res in (8, 9):
        expected = [
            h3.latlng_to_cell(a, b, res) for a, b in zip(pois["lat"], pois["lon"], strict=True)
        ]
        assert pois[f"h3_r{res}"].tolist() == expected
        assert (pois[f"h3_r{res}"].map(h3.get_resolution) == res).all()
    assert 1 < pois["h3_r8"].nunique() < pois["h3_r9"].nunique()


# ---------------------------------------------------------------- truth


def test_crowd_truth_matches_recomputation_from_files(written: Path) -> None:
    retailer = pd.read_parquet(written / "retailer.parquet")
    visits = pd.read_parquet(written / "operator_visits.parquet")
    pois = pd.read_parquet(written / "pois.parquet")
    crowd = pd.read_parquet(written / "truth" / "crowd_truth.parquet")
    labelled = retailer.set_index("user_id")
    joined = visits[visits["user_id"].isin(labelled.index)].merge(pois, on="poi_id")
    assert not joined.empty
    for level, key in (("poi", "poi_id"), ("h3_r8", "h3_r8"), ("h3_r9", "h3_r9")):
        for label in ("beauty", "auto", "sports"):
            ta_users = labelled.index[labelled[f"ta_{label}"] == 1]
            hits = joined[joined["user_id"].isin(ta_users)]
            expected = hits.groupby(key)["user_id"].nunique()
            rows = crowd[(crowd["level"] == level) & (crowd["ta_label"] == label)]
            got = rows.set_index("cell_id")["persons"]
            assert got.sum() > 0
            pd.testing.assert_series_equal(
                got.reindex(expected.index).rename(None),
                expected.rename(None),
                check_names=False,
                check_dtype=False,
                check_index_type=False,
            )
            assert (got.drop(expected.index) == 0).all()


def test_funnel_truth_matches_recomputation_from_files(written: Path) -> None:
    r = pd.read_parquet(written / "retailer.parquet").set_index("user_id")
    m = pd.read_parquet(written / "media.parquet").set_index("user_id")
    o = pd.read_parquet(written / "operator_users.parquet").set_index("user_id")
    visits = pd.read_parquet(written / "operator_visits.parquet")
    sites = pd.read_parquet(written / "campaigns.parquet")
    funnel = pd.read_parquet(written / "truth" / "funnel_truth.parquet")
    ids = r.index.intersection(m.index).intersection(o.index)
    for (campaign, district, group), row in funnel.set_index(
        ["campaign", "district_id", "group"]
    ).iterrows():
        stores = sites[(sites["campaign"] == campaign) & (sites["role"] == "store")]["poi_id"]
        visitors = set(visits.loc[visits["poi_id"].isin(stores), "user_id"])
        flag = 1 if group == "exposed" else 0
        sel = m.loc[ids]
        sel = sel[(sel["exposure_district_id"] == district) & (sel[f"exposed_{campaign}"] == flag)]
        visited = [u for u in sel.index if u in visitors]
        bought = [u for u in visited if r.at[u, "purchases"] > 0]
        again = [u for u in bought if r.at[u, "repeat_purchase"]]
        assert (row["persons"], row["visited"], row["purchased"], row["repeat"]) == (
            len(sel),
            len(visited),
            len(bought),
            len(again),
        )
    assert funnel["persons"].sum() == 3 * len(ids)


def test_planted_effect_visible_in_truth(big_city: City) -> None:
    f = big_city.funnel_truth
    pooled = f.groupby(["campaign", "effect_district", "group"])[["persons", "visited"]].sum()
    rate = pooled["visited"] / pooled["persons"]
    for campaign, spec in big_city.effect_truth["campaigns"].items():
        assert spec["effect_districts"] and spec["no_effect_districts"]
        marked = set(f.loc[(f["campaign"] == campaign) & f["effect_district"], "district_id"])
        assert marked == set(spec["effect_districts"])
        lift = rate[campaign, True, "exposed"] - rate[campaign, True, "control"]
        none = rate[campaign, False, "exposed"] - rate[campaign, False, "control"]
        assert lift > 0.08, (campaign, lift)
        assert abs(none) < 0.04, (campaign, none)


def test_meta_and_effect_json(written: Path, city: City) -> None:
    meta = json.loads((written / "truth" / "meta.json").read_text())
    assert (meta["seed"], meta["persons"], meta["n_pois"]) == (11, 2000, 600)
    assert meta["rows"]["operator_visits"] == len(city.operator_visits)
    effect = json.loads((written / "truth" / "effect_truth.json").read_text())
    for spec in effect["campaigns"].values():
        sizes = [spec["visit_rate_multiplier"][d] for d in spec["effect_districts"]]
        assert min(sizes) > 1.5


def test_districts_geojson_round_trip(written: Path, city: City) -> None:
    read = load_districts(written)
    assert isinstance(read, gpd.GeoDataFrame) and read.crs.to_epsg() == 4326
    assert list(read["district_id"]) == list(city.districts["district_id"])
    assert read.geometry.geom_equals_exact(city.districts.geometry, tolerance=1e-9).all()


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"persons": 99}, "persons"),
        ({"persons": 0}, "persons"),
        ({"persons": 1000.0}, "persons"),
        ({"persons": True}, "persons"),
        ({"n_pois": 9}, "n_pois"),
        ({"seed": -1}, "seed"),
        ({"n_districts": 7}, "n_districts"),
        ({"n_districts": 13}, "n_districts"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_city(**kwargs)


def test_smallest_valid_city() -> None:
    c = make_city(persons=100, seed=0, n_pois=10)
    assert len(c.pois) == 10 and len(c.persons) == 100
    assert set(c.campaigns.loc[c.campaigns["role"] == "store", "campaign"]) == set(
        c.effect_truth["campaigns"]
    )


def test_make_and_write(tmp_path: Path) -> None:
    paths = make_and_write(persons=300, seed=2, out_dir=tmp_path / "out", n_pois=50)
    assert {"pois", "retailer", "operator_visits", "crowd_truth", "meta"} <= set(paths)
    assert all(p.is_file() and p.is_relative_to(tmp_path / "out") for p in paths.values())
    meta = json.loads(paths["meta"].read_text())
    assert meta["rows"]["pois"] == 50 == len(pd.read_parquet(paths["pois"]))
    assert len(pd.read_parquet(paths["retailer"])) == meta["rows"]["retailer"]


# ---------------------------------------------------------------- shipped sample


def test_load_sample_parties() -> None:
    for party in PARTIES:
        frame = load_sample(party)
        assert len(frame) > 5000 and frame["user_id"].is_unique, party
    assert "home_district_id" in load_sample("operator").columns
    assert "converted" in load_sample("retailer").columns
    assert load_sample_visits()["poi_id"].isin(load_pois()["poi_id"]).all()
    assert len(load_districts()) >= 8 and not load_campaigns().empty
    meta = load_truth("meta")
    assert (meta["persons"], meta["seed"]) == (20000, 7)


def test_load_sample_rejects_unknown_party() -> None:
    with pytest.raises(ValueError, match=r"retailer.*media.*operator"):
        load_sample("bank")
    with pytest.raises(ValueError, match="crowd"):
        load_truth("nope")


def test_sample_is_small_and_up_to_date() -> None:
    root = sample_dir()
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert size < 6_000_000
    fresh = make_city(persons=20000, seed=7)
    stale = "datasets/sample is stale: run python datasets/make_sample.py"
    shipped = load_sample("retailer")
    assert len(shipped) == len(fresh.retailer), stale
    pd.testing.assert_frame_equal(shipped, fresh.retailer, check_dtype=False)


def test_sample_dir_missing_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sample, "_packaged_dir", lambda: None)
    monkeypatch.setattr(sample, "_checkout_dir", lambda: None)
    with pytest.raises(FileNotFoundError, match="make_sample"):
        sample_dir()


def test_fedlab_sample_dir_points_every_loader_at_another_city(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = make_city(persons=600, seed=3, n_pois=80)
    write_city(small, tmp_path / "city")
    monkeypatch.setenv("FEDLAB_SAMPLE_DIR", str(tmp_path / "city"))
    assert sample_dir() == tmp_path / "city"
    assert len(load_sample("retailer")) == len(small.retailer) != 20000
    assert len(load_pois()) == 80


def test_fedlab_sample_dir_that_is_no_city_says_so(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDLAB_SAMPLE_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"FEDLAB_SAMPLE_DIR=.* is not a sample city"):
        load_sample("retailer")


def test_private_tables_are_never_readable_by_others(tmp_path: Path) -> None:
    import os

    import pandas as pd

    from fedlab_kit.tables import read_table, write_table

    frame = pd.DataFrame({"user_id": ["a", "b"], "x": [1, 2]})
    old = os.umask(0o022)
    try:
        for name in ("rows.parquet", "rows.csv"):
            path = write_table(frame, tmp_path / "new" / name, private=True)
            assert path.stat().st_mode & 0o777 == 0o600
            assert read_table(path, "user_id").equals(frame)
        assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700
        shared = tmp_path / "shared.csv"
        shared.write_text("x\n")
        shared.chmod(0o644)
        write_table(frame, shared, private=True)  # an existing file loses its old mode
        assert shared.stat().st_mode & 0o777 == 0o600
        assert write_table(frame, tmp_path / "open.csv").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


# ---------------------------------------------------------------- basemap


def test_the_basemap_is_water_and_roads_inside_the_city(city: City, written: Path) -> None:
    import shapely

    from fedlab_kit.data import load_basemap
    from fedlab_kit.data.basemap import KINDS, make_basemap

    basemap = load_basemap(written)
    assert (written / "basemap.geojson").is_file()
    assert set(zip(basemap["kind"], basemap["class"], strict=True)) == KINDS
    outline = shapely.union_all(city.districts.geometry.to_numpy())
    assert basemap.geometry.within(outline.buffer(1e-6)).all()  # clipped to the city
    assert set(basemap.geom_type) == {"Polygon", "LineString"}
    # made from the districts alone: the same again, and for a folder without the file
    (written / "basemap.geojson").rename(written / "basemap.bak")
    try:
        again = load_basemap(written)
    finally:
        (written / "basemap.bak").rename(written / "basemap.geojson")
    assert again.geometry.geom_equals_exact(basemap.geometry, 1e-6).all()
    assert make_basemap(city.districts).equals(make_basemap(city.districts))


def test_the_shipped_sample_has_its_basemap() -> None:
    from fedlab_kit.data import load_basemap, load_districts, sample_dir
    from fedlab_kit.data.basemap import make_basemap

    assert (sample_dir() / "basemap.geojson").is_file()
    shipped = load_basemap()
    assert shipped.geometry.geom_equals_exact(
        make_basemap(load_districts()).geometry, 1e-6).all()
