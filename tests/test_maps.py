"""Tests of fedlab_kit.maps: DP layers, the person-level guard, offline HTML and PNG export.

The export tests open the snapshot in headless Chromium with all networking sent to a dead
local proxy. They need Chromium (`apt-get install -y chromium`) and the npm web assets
(`python -m fedlab_kit.maps`, fetched by the session fixture if missing): without them
they fail, never skip.
"""

from __future__ import annotations

import html as htmllib
import importlib
import io
import re
import shutil
import subprocess
import tarfile
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import folium
import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import pytest
import shapely
from folium.plugins import HeatMap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from released_frames import HIDDEN_COUNT, SHOWN_COUNT, crowd_cells, district_funnel

from fedlab_kit import maps
from fedlab_kit.errors import FedlabError, InputError, InputTypeError
from fedlab_kit.maps import assets as assets_mod
from fedlab_kit.maps.errors import MapExportError, NotReleasedError

STAGES = ["reach", "visit", "purchase", "repeat"]
snapshot_mod = importlib.import_module("fedlab_kit.maps.snapshot")  # maps.snapshot: the function
NO_NET = ["--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]

# --------------------------------------------------------------------------- fixtures
# districts and web_assets come from conftest.py (the MapPanel tests use them too)


@pytest.fixture(scope="module")
def cells() -> pd.DataFrame:
    """A released crowd frame: 6 H3 r8 cells of the sample city, the last one suppressed."""
    return crowd_cells([SHOWN_COUNT, 1200, 640, 300, 75, HIDDEN_COUNT])


@pytest.fixture(scope="module")
def funnel() -> pd.DataFrame:
    """A released 4-stage funnel for two districts (D02's last stage suppressed)."""
    return district_funnel(STAGES)


def _full_map(cells: pd.DataFrame, districts: gpd.GeoDataFrame,
              funnel: pd.DataFrame) -> folium.Map:
    m = maps.base_map()
    maps.crowd_layer(m, cells)
    maps.heatmap_layer(m, cells)
    maps.funnel_layer(m, districts, funnel)
    maps.districts_outline(m, districts)
    folium.LayerControl().add_to(m)
    return m


@pytest.fixture(scope="session")
def chromium() -> str:
    try:
        return maps.find_browser()
    except MapExportError as exc:
        problem = str(exc)
    pytest.fail(f"these tests need headless Chromium (CI installs it): {problem}",
                pytrace=False)


@pytest.fixture(scope="module")
def exported(web_assets: Path, cells: pd.DataFrame, districts: gpd.GeoDataFrame,
             funnel: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "map.html"
    assert maps.snapshot(_full_map(cells, districts, funnel), path) == path
    return path


class _Tags(HTMLParser):
    """Start tags outside <script>/<style> contents (html.parser treats those as text)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _tags(text: str) -> _Tags:
    parser = _Tags()
    parser.feed(text)
    parser.close()
    return parser


def _classes(parsed: _Tags) -> Counter[tuple[str, str]]:
    return Counter((tag, cls) for tag, attrs in parsed.tags
                   for cls in attrs.get("class", "").split())


def _dump_dom(chromium: str, page: Path, profile: Path) -> str:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
           "--window-size=1200,800", "--virtual-time-budget=5000", *NO_NET, "--dump-dom",
           page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _npm_member(web_assets: Path, pkg: maps.NpmPackage, member: str) -> str:
    with tarfile.open(web_assets / pkg.filename) as tar:
        fh = tar.extractfile(f"package/{member}")
        assert fh is not None
        return fh.read().decode("utf-8")


# --------------------------------------------------------------------------- the guard


def test_guard_refuses_a_frame_with_a_user_id_column(cells: pd.DataFrame) -> None:
    rows = cells.assign(user_id=[f"u{i:07d}" for i in range(len(cells))])
    with pytest.raises(NotReleasedError, match=r"person-level.*'user_id'") as info:
        maps.assert_released(rows)
    assert isinstance(info.value, FedlabError)
    assert "differentially private" in str(info.value)


@pytest.mark.parametrize("column", ["user_id", "userId", "UID", "person", "customer_id",
                                    "hashed_user_id", "phone_number", "msisdn", "email",
                                    "E-Mail", "device_id", "first_name", "ip_address"])
def test_person_like_column_names_are_flagged(column: str) -> None:
    assert maps.person_like_columns(["h3", column, "count"]) == [column]


@pytest.mark.parametrize("column", ["h3", "count", "ci_low", "district_id", "name", "stage",
                                    "n_customers", "rate", "lift", "suppressed", "area_km2",
                                    "centre_lat", "campaign_id", "poi_id"])
def test_aggregate_column_names_pass(column: str) -> None:
    assert maps.person_like_columns([column]) == []


def test_guard_refuses_rows_without_a_count_column() -> None:
    visits = pd.DataFrame({"poi_id": ["p1", "p2"], "lat": [31.2, 31.3], "lon": [121.4, 121.5]})
    with pytest.raises(NotReleasedError, match="no 'count' column"):
        maps.assert_released(visits)


def test_guard_refuses_duplicated_keys_and_point_geometries(cells: pd.DataFrame) -> None:
    doubled = pd.concat([cells, cells.head(1)], ignore_index=True)
    with pytest.raises(NotReleasedError, match="share the key"):
        maps.assert_released(doubled, keys=("h3",))
    points = gpd.GeoDataFrame({"count": [1, 2]}, crs=4326,
                              geometry=[shapely.Point(121.4, 31.2), shapely.Point(121.5, 31.3)])
    with pytest.raises(NotReleasedError, match="point geometries"):
        maps.assert_released(points)
    assert maps.assert_released(cells, keys=("h3",)) is cells


def test_guard_refuses_non_frames_and_text_counts() -> None:
    with pytest.raises(NotReleasedError, match="DataFrame"):
        maps.assert_released([{"count": 1}])
    with pytest.raises(NotReleasedError, match="not numeric"):
        maps.assert_released(pd.DataFrame({"count": ["many"]}))


@pytest.mark.parametrize("layer", ["crowd", "heatmap", "funnel", "funnel_districts",
                                   "outline"])
def test_every_layer_function_uses_the_guard(layer: str, cells: pd.DataFrame,
                                             districts: gpd.GeoDataFrame,
                                             funnel: pd.DataFrame) -> None:
    m = maps.base_map()
    tagged_cells = cells.assign(user_id="u0000001")
    tagged_funnel = funnel.assign(user_id="u0000001")
    tagged_districts = districts.assign(phone="+86 21 0000 0000")
    calls = {
        "crowd": lambda: maps.crowd_layer(m, tagged_cells),
        "heatmap": lambda: maps.heatmap_layer(m, tagged_cells),
        "funnel": lambda: maps.funnel_layer(m, districts, tagged_funnel),
        "funnel_districts": lambda: maps.funnel_layer(m, tagged_districts, funnel),
        "outline": lambda: maps.districts_outline(m, tagged_districts),
    }
    with pytest.raises(NotReleasedError, match="person"):
        calls[layer]()
    drawn = [c for c in m._children.values()
             if isinstance(c, folium.GeoJson | HeatMap | folium.FeatureGroup)]
    assert drawn == []  # refused before anything was added to the map


# --------------------------------------------------------------------------- layers


def test_base_map_has_no_tiles_unless_asked() -> None:
    offline = maps.base_map()
    assert not [c for c in offline._children.values() if isinstance(c, folium.TileLayer)]
    assert offline.location == [31.23, 121.47]
    online = maps.base_map((31.2, 121.5), 12, tiles=maps.OSM)
    tiles = [c for c in online._children.values() if isinstance(c, folium.TileLayer)]
    assert len(tiles) == 1 and "openstreetmap" in tiles[0].tiles.lower()


def test_crowd_layer_features_colours_tooltip_and_legend(cells: pd.DataFrame) -> None:
    m = maps.base_map()
    layer = maps.crowd_layer(m, cells)
    features = {f["id"]: f["properties"] for f in layer.data["features"]}
    assert set(features) == set(cells["h3"])
    top, hidden = cells["h3"].iloc[0], cells["h3"].iloc[-1]
    assert features[top]["count"] == SHOWN_COUNT
    assert features[top]["label"] == f"4,321 (95% CI {SHOWN_COUNT - 71:,}–{SHOWN_COUNT + 71:,})"
    assert features[hidden]["count"] is None and features[hidden]["ci_low"] is None
    assert features[hidden]["label"].startswith("suppressed")
    assert features[hidden]["fill"] == maps.layers.SUPPRESSED_FILL
    # the largest count gets the darkest colour of the scale, a small one a light colour
    assert features[top]["fill"].lower().startswith(maps.layers.CROWD_COLORS[-1])
    assert features[top]["fill"] != features[cells["h3"].iloc[4]]["fill"]
    # hexagon polygons from h3.cell_to_boundary, closed rings in (lon, lat) order
    ring = next(f for f in layer.data["features"] if f["id"] == top)["geometry"]
    ring = ring["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == 7
    lat, lng = h3.cell_to_boundary(top)[0]
    assert ring[0] == pytest.approx([lng, lat], abs=1e-6)
    legends = [c for c in m._children.values() if type(c).__name__ == "LinearColormap"]
    assert len(legends) == 1 and legends[0].vmax == SHOWN_COUNT and legends[0].vmin == 0
    assert "suppressed" in legends[0].caption
    rendered = m.get_root().render()
    assert "4,321 (95% CI 4,250" in rendered.replace("\\u2013", "–")
    assert str(HIDDEN_COUNT) not in rendered and f"{HIDDEN_COUNT:,}" not in rendered
    assert 'id="fedlab-hatch"' in rendered


def test_crowd_layer_names_the_district_and_titles_the_page(cells: pd.DataFrame,
                                                            districts: gpd.GeoDataFrame,
                                                            web_assets: Path,
                                                            tmp_path: Path) -> None:
    m = maps.base_map()
    layer = maps.crowd_layer(m, cells, name="TA crowd <beauty>", districts=districts)
    props = [f["properties"] for f in layer.data["features"]]
    names = set(districts["name"]) if "name" in districts else set(districts["district_id"])
    assert {p["district"] for p in props} <= names | {"outside the districts"}
    assert any(p["district"] in names for p in props)
    page = m.get_root().render()
    assert "<title>TA crowd &lt;beauty&gt;</title>" in page and "District" in page
    out = maps.snapshot(m, tmp_path / "m.html", title="Where the audience is")
    assert "<title>Where the audience is</title>" in out.read_text()


def test_crowd_layer_checks_its_input(cells: pd.DataFrame) -> None:
    m = maps.base_map()
    with pytest.raises(ValueError, match="not H3 cell ids"):
        maps.crowd_layer(m, cells.assign(h3=[f"nope{i}" for i in range(len(cells))]))
    with pytest.raises(ValueError, match="missing column"):
        maps.crowd_layer(m, cells.drop(columns=["ci_high"]))
    bad = cells.copy()
    bad.loc[0, "ci_low"] = np.nan
    with pytest.raises(ValueError, match="'ci_low' must be a finite number"):
        maps.crowd_layer(m, bad)
    with pytest.raises(ValueError, match="must hold booleans"):
        maps.crowd_layer(m, cells.assign(suppressed="False"))


def test_heatmap_layer_weights_released_counts_without_suppressed(cells: pd.DataFrame) -> None:
    m = maps.base_map()
    negative = pd.DataFrame({"h3": [h3.latlng_to_cell(31.0, 121.0, 8)], "count": [-3],
                             "ci_low": [-40], "ci_high": [34], "suppressed": [False]})
    layer = maps.heatmap_layer(m, pd.concat([cells, negative], ignore_index=True))
    assert isinstance(layer, HeatMap)
    assert len(layer.data) == 5  # the suppressed and the non-positive cell are left out

    def weight_at(cell: str) -> float:
        lat, lng = h3.cell_to_latlng(cell)
        near = [p for p in layer.data if abs(p[0] - lat) < 1e-5 and abs(p[1] - lng) < 1e-5]
        assert len(near) == 1, cell
        return near[0][2]

    assert weight_at(cells["h3"].iloc[0]) == pytest.approx(1.0)
    assert weight_at(cells["h3"].iloc[1]) == pytest.approx(1200 / SHOWN_COUNT, abs=1e-3)
    assert max(p[2] for p in layer.data) == pytest.approx(1.0)
    assert str(HIDDEN_COUNT) not in m.get_root().render()


def _popups(group: folium.FeatureGroup) -> dict[str, str]:
    """district_id -> popup HTML of a funnel layer."""
    out = {}
    for shape in group._children.values():
        district = shape.data["features"][0]["properties"]["district_id"]
        popup = next(c for c in shape._children.values() if isinstance(c, folium.Popup))
        out[district] = next(iter(popup.html._children.values())).data
    return out


def test_funnel_layer_popups_show_stages_rates_and_intervals(
        districts: gpd.GeoDataFrame, funnel: pd.DataFrame) -> None:
    m = maps.base_map()
    shuffled = funnel.sample(frac=1.0, random_state=3)
    shuffled["stage"] = pd.Categorical(shuffled["stage"], categories=STAGES, ordered=True)
    group = maps.funnel_layer(m, districts, shuffled)
    popups = _popups(group)
    assert set(popups) == {"D01", "D02"}  # districts without rows are not drawn
    central = popups["D01"]
    assert central.startswith('<div style="width:280px')
    positions = [central.index(f"<b>{stage}</b>") for stage in STAGES]
    assert positions == sorted(positions)  # categorical order kept though rows are shuffled
    assert "5,000 <span" in central and "(95% CI 4,960–5,040)" in central
    assert central.count("conversion 40.0%") == 3 and "lift +12.3%" in central
    assert central.count("<svg") == 4 and "<script" not in central and "http" not in central
    # the bar of stage i is proportional to its count (top bar = the full width less CI room)
    widths = [float(w) for w in re.findall(r'<rect x="0" y="1" width="([\d.]+)"', central)]
    assert widths[0] > widths[1] > widths[2] > widths[3] > 0
    assert widths[1] / widths[0] == pytest.approx(2000 / 5000, rel=0.01)
    other = popups["D02"]
    assert "<b>repeat</b>: <i>suppressed" in other and not re.search(r"\b192\b", other)


def test_funnel_layer_orders_stages_and_checks_districts(
        districts: gpd.GeoDataFrame, funnel: pd.DataFrame) -> None:
    m = maps.base_map()
    html = _popups(maps.funnel_layer(m, districts, funnel))["D01"]  # first appearance
    positions = [html.index(f"<b>{stage}</b>") for stage in STAGES]
    assert positions == sorted(positions)
    reverse = list(reversed(STAGES))
    html = _popups(maps.funnel_layer(m, districts, funnel, stage_order=reverse))["D01"]
    positions = [html.index(f"<b>{stage}</b>") for stage in reverse]
    assert positions == sorted(positions)
    with pytest.raises(ValueError, match="not in the districts frame"):
        maps.funnel_layer(m, districts,
                          funnel.assign(district_id=funnel["district_id"].replace("D02", "D99")))
    with pytest.raises(ValueError, match="not in stage_order"):
        maps.funnel_layer(m, districts, funnel, stage_order=STAGES[:2])
    with pytest.raises(NotReleasedError, match="share the key"):
        maps.funnel_layer(m, districts, pd.concat([funnel, funnel.head(1)]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stage=st.text(min_size=1, max_size=30))
def test_funnel_popup_escapes_any_stage_name(stage: str) -> None:
    """Stage and district names end up in HTML inside a JS template literal: no injection."""
    districts = gpd.GeoDataFrame({"district_id": ["D01"], "name": [stage]}, crs=4326,
                                 geometry=[shapely.box(121.4, 31.2, 121.5, 31.3)])
    funnel = pd.DataFrame({"district_id": ["D01"], "stage": [stage], "count": [10],
                           "ci_low": [5], "ci_high": [15], "rate": [np.nan]})
    html = _popups(maps.funnel_layer(maps.base_map(), districts, funnel))["D01"]
    assert "`" not in html and "$" not in html and "\\" not in html and "\n" not in html
    assert "<script" not in html.lower()
    assert stage.replace("\n", " ") in htmllib.unescape(html).replace("\n", " ")


def test_districts_outline_draws_outlines_and_labels(districts: gpd.GeoDataFrame) -> None:
    m = maps.base_map()
    group = maps.districts_outline(m, districts)
    children = list(group._children.values())
    outlines = [c for c in children if isinstance(c, folium.GeoJson)]
    labels = [c for c in children if isinstance(c, folium.Marker)]
    assert len(outlines) == 1 and outlines[0].options["interactive"] is False
    assert len(outlines[0].data["features"]) == len(districts)
    assert len(labels) == len(districts)
    assert all(label.options["interactive"] is False for label in labels)
    rendered = m.get_root().render()
    for name in districts["name"]:
        assert htmllib.escape(name) in rendered
    with pytest.raises(ValueError, match="polygons"):
        maps.districts_outline(m, districts.assign(geometry=districts.boundary))


# --------------------------------------------------------------------------- offline HTML


def test_exported_html_is_self_contained(exported: Path, web_assets: Path,
                                         cells: pd.DataFrame) -> None:
    text = exported.read_text(encoding="utf-8")
    parsed = _tags(text)
    urls = [attrs.get("src", "") for tag, attrs in parsed.tags if tag == "script"]
    urls += [attrs.get("href", "") for tag, attrs in parsed.tags if tag == "link"]
    assert not [u for u in urls if re.match(r"\s*(https?:)?//", u, re.IGNORECASE)], urls
    assert not re.search(r"<script[^>]+src=|<link[^>]+stylesheet", text, re.IGNORECASE)
    # the very sources of the npm packages and of folium's heat plugin are inlined
    leaflet_js = _npm_member(web_assets, maps.assets.LEAFLET, "dist/leaflet.js")
    middle = leaflet_js[len(leaflet_js) // 2:len(leaflet_js) // 2 + 2000]
    assert "Leaflet 1.9.4" in text and middle in text
    assert _npm_member(web_assets, maps.assets.JQUERY, "dist/jquery.min.js")[-2000:] in text
    assert _npm_member(web_assets, maps.assets.D3_V3, "d3.min.js")[:2000] in text
    heat = (Path(folium.__file__).parent / "templates" / "leaflet_heat.min.js").read_text()
    assert heat.strip()[-1000:] in text
    assert "sourceMappingURL" not in text
    # CSS images are data URIs, the default marker icon too
    assert "url(images/" not in text and "url(data:image/png;base64," in text
    # the layer data is there: a cell id, its count and label, the funnel popups
    assert cells["h3"].iloc[0] in text and f'"count": {SHOWN_COUNT}' in text
    assert "(95% CI 4,960–5,040)" in text and "conversion 40.0%" in text
    assert str(HIDDEN_COUNT) not in text
    # no CDN host is left anywhere in the page
    for host in ("cdn.jsdelivr.net", "cdnjs.cloudflare.com", "code.jquery.com",
                 "netdna.bootstrapcdn.com"):
        assert host not in text, host


def test_snapshot_fails_clearly_without_assets(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               cells: pd.DataFrame) -> None:
    monkeypatch.setenv(maps.assets.ASSETS_ENV, str(tmp_path / "empty"))
    m = maps.base_map()
    maps.crowd_layer(m, cells)
    with pytest.raises(MapExportError, match=re.escape(maps.INSTALL_COMMAND)) as info:
        maps.snapshot(m, tmp_path / "map.html")
    assert "leaflet@1.9.4" in str(info.value)
    assert not (tmp_path / "map.html").exists()


def test_ensure_assets_needs_npm_and_checks_integrity(tmp_path: Path, web_assets: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    for pkg in maps.NPM_PACKAGES:
        shutil.copy(web_assets / pkg.filename, cache / pkg.filename)
    assert maps.missing_assets(cache) == []
    assert maps.ensure_assets(cache) == cache  # complete: npm is not even looked for
    (cache / maps.assets.LEAFLET.filename).write_bytes(b"tampered")
    assert maps.missing_assets(cache) == [maps.assets.LEAFLET]
    with pytest.raises(MapExportError, match="are not available"):
        maps.inline_assets(maps.base_map().get_root().render(), cache)
    monkeypatch.setattr(assets_mod.shutil, "which", lambda *_a, **_k: None)
    with pytest.raises(MapExportError, match="npm is not installed"):
        maps.ensure_assets(cache)


def test_markers_and_unknown_remote_assets(web_assets: Path) -> None:
    plain = maps.base_map()
    folium.Marker([31.23, 121.47]).add_to(plain)  # Leaflet's default icon: inlined images
    text = maps.offline_html(plain)
    assert "D.imagePath=''" in text and '"shadowUrl": "data:image/png;base64,' in text
    with_icon = maps.base_map()
    folium.Marker([31.23, 121.47], icon=folium.Icon(color="red")).add_to(with_icon)
    with pytest.raises(MapExportError, match=r"folium\.Icon"):
        maps.offline_html(with_icon)
    unknown = maps.base_map()
    unknown.get_root().header.add_child(
        folium.Element('<script src="https://cdn.example.org/plugin.js"></script>'))
    with pytest.raises(MapExportError, match=r"cdn\.example\.org/plugin\.js"):
        maps.offline_html(unknown)
    assert maps.remote_asset_refs(maps.offline_html(maps.base_map())) == []


def test_snapshot_rejects_other_formats(tmp_path: Path) -> None:
    # the caller's mistakes, not a missing browser or assets (MapExportError)
    with pytest.raises(InputError, match=r"\.html or \.png"):
        maps.snapshot(maps.base_map(), tmp_path / "map.pdf")
    with pytest.raises(InputTypeError, match="folium map"):
        maps.snapshot(object(), tmp_path / "map.html")


# --------------------------------------------------------------------------- in Chromium


def test_exported_html_renders_with_networking_disabled(exported: Path, chromium: str,
                                                        tmp_path: Path, cells: pd.DataFrame,
                                                        districts: gpd.GeoDataFrame) -> None:
    dom = _dump_dom(chromium, exported, tmp_path / "profile")
    parsed = _tags(dom)
    classes = _classes(parsed)
    assert classes[("div", "leaflet-container")] == 1  # Leaflet ran
    # one interactive path per crowd cell and per funnel district (outlines are inert)
    assert classes[("path", "leaflet-interactive")] == len(cells) + 2
    fills = Counter(attrs.get("fill") for tag, attrs in parsed.tags
                    if tag == "path" and "leaflet-interactive" in attrs.get("class", ""))
    assert fills[maps.layers.SUPPRESSED_FILL] == 1
    assert classes[("canvas", "leaflet-heatmap-layer")] == 1
    assert classes[("div", "legend")] == 1 and classes[("g", "tick")] >= 3  # d3 legend
    assert classes[("div", "fedlab-district-label")] == len(districts)
    assert classes[("div", "leaflet-control-layers")] == 1
    text = " ".join(parsed.text)
    assert "Central" in text and "Crowd per H3 cell" in text


def test_sandbox_really_blocks_the_network(chromium: str, tmp_path: Path,
                                           cells: pd.DataFrame) -> None:
    """Control for the test above: the same map with folium's CDN links does not load."""
    m = maps.base_map()
    maps.crowd_layer(m, cells)
    page = tmp_path / "cdn.html"
    m.save(str(page))
    assert "https://cdn.jsdelivr.net/npm/leaflet" in page.read_text()
    classes = _classes(_tags(_dump_dom(chromium, page, tmp_path / "profile")))
    assert classes[("div", "folium-map")] == 1
    assert classes[("div", "leaflet-container")] == 0
    assert classes[("path", "leaflet-interactive")] == 0


def test_png_snapshot_is_a_picture_of_the_map(chromium: str, web_assets: Path,
                                              tmp_path: Path, cells: pd.DataFrame,
                                              districts: gpd.GeoDataFrame,
                                              funnel: pd.DataFrame) -> None:
    path = maps.snapshot(_full_map(cells, districts, funnel), tmp_path / "out" / "map.png",
                         width=900, height=600)
    image = Image.open(path).convert("RGB")
    assert image.size == (900, 600)
    colours = Counter({c: n for n, c in image.getcolors(maxcolors=1 << 24)})
    assert len(colours) > 200, len(colours)
    _background, most = colours.most_common(1)[0]
    assert most / (900 * 600) < 0.95  # something is drawn over the background
    # the hottest cell is visible: crowd fill #bd0026 at 0.6 opacity, the heat map's red core
    reds = sum(n for (r, g, b), n in colours.items() if r > 150 and g < 110 and b < 110)
    assert reds > 20, reds


def test_png_without_a_browser_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.delenv(snapshot_mod.BROWSER_ENV, raising=False)
    monkeypatch.setattr(snapshot_mod.shutil, "which", lambda *_a, **_k: None)
    with pytest.raises(MapExportError, match=r"apt-get install -y chromium") as info:
        maps.snapshot(maps.base_map(), tmp_path / "map.png", renderer="browser")
    assert "FEDLAB_CHROMIUM" in str(info.value) and "HTML export" in str(info.value)
    assert not (tmp_path / "map.png").exists()


def _blend(fill: str, opacity: float, background: str = "#dddddd") -> np.ndarray:
    rgb = [np.array([int(c[i:i + 2], 16) for i in (1, 3, 5)], float) for c in (fill, background)]
    return opacity * rgb[0] + (1 - opacity) * rgb[1]


def _pixels_near(image: Image.Image, colour: np.ndarray, tol: float = 8) -> int:
    a = np.asarray(image.convert("RGB"), float)
    return int((np.abs(a - colour).max(axis=2) <= tol).sum())


def test_png_without_a_browser_is_drawn_with_the_same_colours(
        monkeypatch: pytest.MonkeyPatch, chromium: str, web_assets: Path, tmp_path: Path,
        cells: pd.DataFrame, districts: gpd.GeoDataFrame, funnel: pd.DataFrame) -> None:
    """No Chromium: the PNG is drawn with matplotlib (a warning says so), and the hottest
    crowd cell and the funnel districts have the colours the browser's picture has (no
    heat map: it has no static form, and in the browser it covers the cells' colours)."""
    m = maps.base_map()
    maps.crowd_layer(m, cells)
    maps.funnel_layer(m, districts, funnel)
    maps.districts_outline(m, districts)
    browser = Image.open(maps.snapshot(m, tmp_path / "browser.png", width=900, height=600))
    monkeypatch.delenv(snapshot_mod.BROWSER_ENV, raising=False)
    monkeypatch.setattr(snapshot_mod.shutil, "which", lambda *_a, **_k: None)
    with pytest.warns(UserWarning, match="drawn with matplotlib"):
        path = maps.snapshot(m, tmp_path / "static.png", width=900, height=600)
    static = Image.open(path)
    assert static.size == (900, 600)
    hottest = _blend(maps.layers.CROWD_COLORS[-1], 0.6)  # the largest count: the last colour
    funnel_fill = _blend("#3182bd", 0.18)  # funnel_layer's fill without color_by
    for colour, least in ((hottest, 20), (funnel_fill, 2000)):
        assert _pixels_near(static, colour) >= least, colour
        assert _pixels_near(browser, colour) >= least, colour  # the reference has it too
    assert _pixels_near(static, _blend("#dddddd", 1.0), tol=0) > 0.3 * 900 * 600  # backdrop


def test_static_png_draws_legends_labels_and_title(tmp_path: Path, cells: pd.DataFrame,
                                                   districts: gpd.GeoDataFrame,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    m = maps.base_map()
    maps.crowd_layer(m, cells)
    maps.districts_outline(m, districts)
    hidden = maps.base_map()
    maps.crowd_layer(hidden, cells, show=False)
    maps.districts_outline(hidden, districts)
    texts: list[str] = []  # what the renderer writes on the picture
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    for cls in (Axes, Figure):
        original = cls.text
        monkeypatch.setattr(cls, "text", lambda self, *a, _o=original, **k:
                            texts.append(str(a[2])) or _o(self, *a, **k))
    maps.snapshot(m, tmp_path / "m.png", renderer="static", title="Beauty TA crowd")
    assert "Beauty TA crowd" in texts  # the title
    assert {"Central", "Old Town"} <= set(texts)  # district labels
    shown = _pixels_near(Image.open(tmp_path / "m.png"), _blend(maps.layers.CROWD_COLORS[-1], 0.6))
    maps.snapshot(hidden, tmp_path / "h.png", renderer="static")
    assert shown > 20 and _pixels_near(Image.open(tmp_path / "h.png"),
                                       _blend(maps.layers.CROWD_COLORS[-1], 0.6)) == 0
    with pytest.raises(MapExportError, match="no polygon layer"):
        maps.snapshot(maps.base_map(), tmp_path / "empty.png", renderer="static")
    with pytest.raises(InputError, match="renderer must be one of"):
        maps.snapshot(m, tmp_path / "x.png", renderer="svg")


def test_png_with_a_missing_or_broken_browser(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              web_assets: Path) -> None:
    monkeypatch.setenv(snapshot_mod.BROWSER_ENV, str(tmp_path / "no-such-chrome"))
    with pytest.raises(MapExportError, match=r"no-such-chrome.*not found"):
        maps.snapshot(maps.base_map(), tmp_path / "a.png")
    monkeypatch.delenv(snapshot_mod.BROWSER_ENV)
    with pytest.raises(MapExportError, match="wrote no screenshot"):
        maps.snapshot(maps.base_map(), tmp_path / "b.png", browser="false")
    slow = tmp_path / "slow-browser"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    with pytest.raises(MapExportError, match="did not finish within 1 s"):
        maps.snapshot(maps.base_map(), tmp_path / "c.png", browser=str(slow), timeout=1)
    assert not list(tmp_path.glob("*.png"))


def test_png_reader_rejects_non_png() -> None:
    with pytest.raises(MapExportError, match="valid PNG"):
        snapshot_mod._png_size(io.BytesIO(b"GIF89a....").getvalue())


def _fills(group: folium.FeatureGroup) -> dict[str, str]:
    """{district: fill colour} of a funnel layer's district shapes."""
    return {shape.data["features"][0]["properties"]["district_id"]:
            shape.style_function(None)["fillColor"] for shape in group._children.values()
            if hasattr(shape, "data")}


def test_funnel_layer_shades_districts_by_lift(districts: gpd.GeoDataFrame,
                                               funnel: pd.DataFrame) -> None:
    frame = funnel.copy()
    frame["lift"] = np.where(frame["district_id"] == "D01", 0.5, -0.25)
    m = maps.base_map()
    group = maps.funnel_layer(m, districts, frame, stage_order=STAGES, color_by="lift",
                              color_stage="visit", caption="Lift of visits")
    fills = _fills(group)
    assert fills["D01"] != fills["D02"]
    assert fills["D01"].lower().startswith("#1a9641")  # the top of the green end
    page = m.get_root().render()
    # the legend speaks percent, as the popups do (+50.0%), over a light backdrop
    assert "Lift of visits (%)" in page and ".legend.leaflet-control{background" in page
    assert "domain([-50.0," in page  # +50% lift is the top of the scale, not 0.5
    # one district's noisy +400% does not stretch the scale (its popup keeps the number)
    wild = frame.assign(lift=np.where(frame["district_id"] == "D01", 4.0, -0.25))
    m2 = maps.base_map()
    group2 = maps.funnel_layer(m2, districts, wild, stage_order=STAGES, color_by="lift",
                               color_stage="visit")
    assert "domain([-100.0," in m2.get_root().render()
    fills2 = _fills(group2)
    assert fills2["D01"].lower().startswith("#1a9641") and fills2["D02"] != fills["D02"]
    assert "<title>Lift of visits</title>" in page
    plain = maps.funnel_layer(maps.base_map(), districts, frame, stage_order=STAGES)
    assert {s.style_function(None)["fillColor"] for s in plain._children.values()} == {
        "#3182bd"}
    with pytest.raises(ValueError, match="color_stage 'bought' is not a stage"):
        maps.funnel_layer(maps.base_map(), districts, frame, color_by="lift",
                          color_stage="bought")


# --------------------------------------------------------------------------- in the notebook


def _srcdoc(view: str) -> str:
    import html as html_lib
    import re

    match = re.search(r'srcdoc="(.*?)" style=', view, re.S)
    assert match is not None, view[:200]
    return html_lib.unescape(match.group(1))


def test_a_map_shown_in_a_notebook_draws_with_the_network_blocked(
        chromium: str, web_assets: Path, tmp_path: Path, cells: pd.DataFrame) -> None:
    """What a notebook cell ending in ``m`` shows: Leaflet inlined, no CDN and no "Make
    this Notebook Trusted" placeholder; in Chromium with no network it draws every cell."""
    m = maps.base_map()
    maps.crowd_layer(m, cells)
    view = m._repr_html_()
    assert "Make this Notebook Trusted" not in view
    page = _srcdoc(view)
    assert maps.remote_asset_refs(page) == []
    path = tmp_path / "cell.html"
    path.write_text(page, encoding="utf-8")
    classes = _classes(_tags(_dump_dom(chromium, path, tmp_path / "profile")))
    assert classes[("div", "leaflet-container")] == 1
    assert classes[("path", "leaflet-interactive")] == len(cells)


def test_a_map_without_bundled_assets_falls_back_to_folium_view(web_assets: Path) -> None:
    m = maps.base_map()
    folium.Marker([31.2, 121.4], icon=folium.Icon()).add_to(m)  # awesome-markers: no copy
    assert "Make this Notebook Trusted" in m._repr_html_()


def test_map_panel_inlines_assets_by_default_when_they_are_there(
        web_assets: Path, cells: pd.DataFrame) -> None:
    from fedlab_kit.widgets import MapPanel

    panel = MapPanel(cells=cells)
    assert panel.offline is True
    page = _srcdoc(panel.map_view.value)
    assert maps.remote_asset_refs(page) == [] and "leaflet" in page.lower()



def test_one_funnel_map_per_campaign(districts: gpd.GeoDataFrame, funnel: pd.DataFrame,
                                     web_assets: Path, tmp_path: Path) -> None:
    """A static snapshot cannot switch campaigns: each campaign gets its own map, titled
    with it and holding only its rows (not the other campaign's, nor the district totals)."""
    beauty = funnel.assign(campaign="beauty", group="exposed", level="campaign")
    auto = funnel.assign(campaign="auto", group="exposed", level="campaign",
                         count=funnel["count"] + 1)
    totals = funnel.assign(campaign="all", group="all", level="district")
    control = funnel.assign(campaign="beauty", group="control", level="campaign")
    table = pd.concat([beauty, auto, totals, control], ignore_index=True)
    made = maps.campaign_funnel_maps(districts, table, stage_order=STAGES)
    assert list(made) == ["auto", "beauty"]
    for campaign, m in made.items():
        page = maps.snapshot(m, tmp_path / f"funnel_{campaign}.html").read_text()
        assert f"<title>Campaign funnel: {campaign} (DP)</title>" in page
        assert f"({campaign}, DP)" in page  # the legend's caption
        top = int(table[(table["campaign"] == campaign) & (table["stage"] == STAGES[0])
                        & (table["district_id"] == "D01")]["count"].iloc[0])
        other = 5001 if campaign == "beauty" else 5000
        assert f"{top:,}" in page and f"{other:,}" not in page
    with pytest.raises(InputError, match="no funnel rows of group 'exposed'"):
        maps.campaign_funnel_maps(districts, totals, stage_order=STAGES)


def test_basemap_draws_under_the_data_and_offline(web_assets: Path, tmp_path: Path,
                                                  cells: pd.DataFrame,
                                                  districts: gpd.GeoDataFrame) -> None:
    from fedlab_kit.data import load_basemap

    basemap = load_basemap()
    m = maps.base_map(basemap=basemap)
    maps.crowd_layer(m, cells)
    groups = [c for c in m._children.values() if isinstance(c, folium.FeatureGroup)]
    assert groups and groups[0].layer_name == "Basemap"  # first: the data draws on top
    page = maps.snapshot(m, tmp_path / "m.html").read_text()
    assert '"class": "river"' in page and '"class": "motorway"' in page
    water = _blend(maps.layers.BASEMAP_STYLES[("water", "river")]["fillColor"], 0.9)
    image = Image.open(maps.snapshot(m, tmp_path / "m.png", renderer="static",
                                     width=900, height=600))
    assert _pixels_near(image, water, tol=6) > 500  # the river and the lake
    with pytest.raises(InputError, match=r"missing|kind"):
        maps.basemap_layer(maps.base_map(), districts)  # districts are not a basemap
    with pytest.raises(InputTypeError, match="GeoDataFrame"):
        maps.basemap_layer(maps.base_map(), pd.DataFrame({"kind": [], "class": []}))
