"""folium layers that draw released (differentially private) aggregates, never rows.

Every function here first calls :func:`assert_released` on the frames it is given: a frame
with a person-identifier column (``user_id``, ``phone``, ``email``, ...), without a count
column, with duplicated keys or with point geometries is refused with
:class:`~fedlab_kit.maps.errors.NotReleasedError`. Only the released numbers reach the map:
a suppressed cell's or stage's count is never written into the page.

Typical use::

    from fedlab_kit import maps

    m = maps.base_map()                              # no tiles: works offline
    maps.crowd_layer(m, cells)                       # h3, count, ci_low, ci_high, suppressed
    maps.heatmap_layer(m, cells)
    maps.funnel_layer(m, districts, funnel)
    maps.districts_outline(m, districts)
    folium.LayerControl().add_to(m)
    maps.snapshot(m, "out/crowd.html")
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import branca.colormap as cm
import folium
import geopandas as gpd
import h3
import pandas as pd
from folium.plugins import HeatMap

from fedlab_kit.errors import InputError, InputTypeError
from fedlab_kit.maps.errors import NotReleasedError
from fedlab_kit.maps.keep_in_view import KeepInView
from fedlab_kit.maps.snapshot import notebook_html

DEFAULT_CENTER = (31.23, 121.47)
DEFAULT_ZOOM = 12
OSM = "OpenStreetMap"
CROWD_COLORS: tuple[str, ...] = ("#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026")
SUPPRESSED_FILL = "url(#fedlab-hatch) #9e9e9e"  # SVG pattern, grey where patterns fail
SUPPRESSED_LABEL = "suppressed (too few to release)"

# --------------------------------------------------------------------------- the guard

_SUBJECTS = ("user|person|people|customer|member|subscriber|visitor|device|client|account"
             "|individual|household|cookie|patient|employee|respondent|contact|citizen")
_ID_SUFFIX = "id|ids|key|hash|hashed|uuid|guid|no|num|number|ref"
_PERSON_PATTERNS = (
    re.compile(rf"(?:{_SUBJECTS})"),                                  # the whole name
    re.compile(rf"(?:.*_)?(?:{_SUBJECTS})_?(?:{_ID_SUFFIX})"),        # ..._user_id, userid
    re.compile(r"(?:.*_)?(?:first|last|full|given|family|sur|maiden)_?name"),
    re.compile(r"uid|pid|upi|e_?mail(?:_.*)?|ip_?addr(?:ess)?|mac_?addr(?:ess)?|address"),
)
_PERSON_TOKENS = frozenset({
    "phone", "telephone", "msisdn", "imei", "imsi", "idfa", "gaid", "email", "ssn",
    "passport", "dob", "birthdate", "birthday",
})


def _normalise(column: object) -> str:
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(column))  # userId -> user_Id
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")


def person_like_columns(columns: Iterable[object]) -> list[str]:
    """The column names that look like person identifiers or contact data."""
    flagged = []
    for column in columns:
        name = _normalise(column)
        squashed = name.replace("_", "")
        if (any(p.fullmatch(name) or p.fullmatch(squashed) for p in _PERSON_PATTERNS)
                or _PERSON_TOKENS.intersection(name.split("_"))):
            flagged.append(str(column))
    return flagged


def assert_released(df: Any, *, count_col: str | None = "count",
                    keys: Sequence[str] = (), what: str = "frame") -> pd.DataFrame:
    """Refuse a frame that does not look like a released aggregate; return it unchanged.

    ``df`` must be a pandas DataFrame (or GeoDataFrame) with no person-identifier column
    (see :func:`person_like_columns`), with a numeric ``count_col`` (pass ``None`` for
    geometry frames such as districts), with ``keys`` unique (one row per released cell),
    and, if it has geometries, no point geometries (points look like individual locations).
    Raises :class:`NotReleasedError` naming the problem.
    """
    hint = ("map layers draw only released, differentially private aggregates "
            "(e.g. counts from fedlab_kit.dp.release_counts), never person-level rows")
    if not isinstance(df, pd.DataFrame):
        raise NotReleasedError(f"{what}: expected a pandas DataFrame of released aggregates, "
                               f"got {type(df).__name__}")
    flagged = person_like_columns(df.columns)
    if flagged:
        raise NotReleasedError(f"{what}: refusing a frame that looks person-level: column(s) "
                               f"{flagged} look like person identifiers; {hint}")
    if count_col is not None:
        if count_col not in df.columns:
            raise NotReleasedError(f"{what}: refusing a frame with no {count_col!r} column "
                                   f"(columns: {[str(c) for c in df.columns]}); {hint}")
        if not pd.api.types.is_numeric_dtype(df[count_col]):
            raise NotReleasedError(f"{what}: column {count_col!r} is not numeric "
                                   f"({df[count_col].dtype}); {hint}")
    keys = [k for k in keys if k in df.columns]
    if keys and df.duplicated(keys).any():
        dup = df.loc[df.duplicated(keys, keep=False), keys].head(3).to_dict("records")
        raise NotReleasedError(f"{what}: several rows share the key {keys} (e.g. {dup}): a "
                               f"released aggregate has one row per key; {hint}")
    if isinstance(df, gpd.GeoDataFrame) and df.active_geometry_name is not None:
        kinds = set(df.geom_type.dropna().astype(str))
        if kinds & {"Point", "MultiPoint"}:
            raise NotReleasedError(f"{what}: refusing point geometries (they look like "
                                   f"individual locations); pass polygons; {hint}")
    return df


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{what}: missing column(s) {missing}; "
                         f"got {[str(c) for c in df.columns]}")


def _bool_column(df: pd.DataFrame, column: str, what: str) -> pd.Series:
    if column not in df.columns:
        return pd.Series(False, index=df.index)
    values = df[column]
    if values.isna().any():
        raise InputError(f"{what}: column {column!r} has missing values; use True/False")
    if not (pd.api.types.is_bool_dtype(values)
            or (pd.api.types.is_numeric_dtype(values) and values.isin([0, 1]).all())):
        raise InputError(f"{what}: column {column!r} must hold booleans, got {values.dtype}")
    return values.astype(bool)


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _check_released_numbers(df: pd.DataFrame, shown: pd.Series, columns: Sequence[str],
                            what: str) -> None:
    for column in columns:
        bad = df.loc[shown, column].map(lambda v: not _finite(v))
        if bad.any():
            raise InputError(f"{what}: column {column!r} must be a finite number for every "
                             f"row that is not suppressed ({int(bad.sum())} are not)")


def _fmt_count(value: float) -> str:
    return f"{round(float(value)):,}"


def _fmt_interval(low: float, high: float) -> str:
    return f"95% CI {_fmt_count(low)}–{_fmt_count(high)}"


# --------------------------------------------------------------------------- base map


class NotebookMap(folium.Map):
    """A folium map that, shown in a notebook, inlines Leaflet & co. (no CDN, so it draws
    offline) whenever the offline assets are there, and falls back to folium's own view
    otherwise."""

    def _repr_html_(self, **kwargs: Any) -> str:
        page = notebook_html(self)
        return page if page is not None else super()._repr_html_(**kwargs)


def base_map(center: Sequence[float] = DEFAULT_CENTER, zoom: int = DEFAULT_ZOOM,
             tiles: str | None = None, *, attr: str | None = None, basemap: Any = None,
             **kwargs: Any) -> folium.Map:
    """A folium map with no tile layer by default (renders with no network); in a notebook
    it shows itself with its web assets inlined (:class:`NotebookMap`).

    ``tiles=maps.OSM`` (``"OpenStreetMap"``) adds OpenStreetMap tiles for online use; any
    other folium tile name, or a URL template with ``attr``, works too. Without tiles, add
    :func:`districts_outline` so the map is readable. ``basemap`` (a GeoDataFrame of water
    and roads, e.g. :func:`fedlab_kit.data.load_basemap`) is drawn first, as an offline
    vector backdrop (:func:`basemap_layer`).
    """
    if len(center) != 2:
        raise InputError(f"center must be (lat, lon), got {center!r}")
    options: dict[str, Any] = {"control_scale": True, **kwargs}
    if tiles is None:
        m = NotebookMap(location=list(center), zoom_start=zoom, tiles=None, **options)
    else:
        m = NotebookMap(location=list(center), zoom_start=zoom, tiles=tiles, attr=attr,
                        **options)
    KeepInView().add_to(m)  # a map laid out late still shows this view, not the world
    if basemap is not None:
        basemap_layer(m, basemap)
    return m


def set_title(m: folium.Map, title: str, *, replace: bool = False) -> None:
    """The exported page's ``<title>`` (the first layer's caption unless set)."""
    root = m.get_root()
    if replace or not getattr(root, "title", None):
        root.title = html.escape(str(title), quote=False)


#: columns that hold fractions: shown as percentages in legends, as in the popups
PERCENT_COLUMNS = frozenset({"rate", "rate_ci_low", "rate_ci_high", "lift", "lift_ci_low",
                             "lift_ci_high"})


PERCENT_SCALE_CAP = 100.0  # colour scales of percentages end at +-100% (popups: exact)


def _ensure_legend_style(m: folium.Map) -> None:
    """Give branca's colour legend a light backdrop so it stays readable over the map."""
    header = getattr(m.get_root(), "header", None)
    if header is None or "fedlab_legend_style" in header._children:
        return
    css = ("<style>.legend.leaflet-control{background:rgba(255,255,255,.85);"
           "padding:2px 8px 4px;border-radius:4px;box-shadow:0 1px 4px rgba(0,0,0,.25)}"
           "</style>")
    header.add_child(folium.Element(css), name="fedlab_legend_style")


def _ensure_hatch_pattern(m: folium.Map) -> None:
    """Add (once) the SVG pattern that suppressed cells are filled with."""
    root = m.get_root()
    body = getattr(root, "html", None)
    if body is None or "fedlab_hatch_pattern" in body._children:
        return
    svg = ('<svg width="0" height="0" style="position:absolute" aria-hidden="true">'
           '<defs><pattern id="fedlab-hatch" patternUnits="userSpaceOnUse" width="8" '
           'height="8" patternTransform="rotate(45)"><rect width="8" height="8" '
           'fill="#e0e0e0"/><line x1="0" y1="0" x2="0" y2="8" stroke="#8a8a8a" '
           'stroke-width="3"/></pattern></defs></svg>')
    body.add_child(folium.Element(svg), name="fedlab_hatch_pattern")


# --------------------------------------------------------------------------- crowd


def _cell_polygon(cell: str) -> dict[str, Any]:
    ring = [[round(lng, 7), round(lat, 7)] for lat, lng in h3.cell_to_boundary(cell)]
    ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}


def _crowd_cells(cells: Any, what: str, *, need_ci: bool) -> tuple[pd.DataFrame, pd.Series]:
    assert_released(cells, keys=("h3",), what=what)
    _require(cells, ["h3", "count", *(["ci_low", "ci_high"] if need_ci else [])], what)
    df = cells.reset_index(drop=True)
    suppressed = _bool_column(df, "suppressed", what)
    bad = [c for c in df["h3"] if not (isinstance(c, str) and h3.is_valid_cell(c))]
    if bad:
        raise InputError(f"{what}: {len(bad)} value(s) in 'h3' are not H3 cell ids, "
                         f"e.g. {bad[:3]}")
    _check_released_numbers(df, ~suppressed, ["count", *(["ci_low", "ci_high"]
                                                          if need_ci else [])], what)
    return df, suppressed


def crowd_layer(m: folium.Map, cells: pd.DataFrame, *, name: str = "Crowd counts (DP)",
                caption: str = "Crowd per H3 cell (DP counts; hatched = suppressed)",
                colors: Sequence[str] = CROWD_COLORS, fill_opacity: float = 0.6,
                show: bool = True, districts: Any = None) -> folium.GeoJson:
    """An H3 choropleth of released crowd counts, with a colour legend and tooltips.

    ``cells`` has one row per H3 cell: ``h3`` (cell id), ``count`` (noisy count),
    ``ci_low``/``ci_high`` (95 % interval) and ``suppressed`` (bool). The tooltip shows
    the district (when ``districts`` is given: the polygon holding the cell's centre), then
    ``count (95% CI low–high)``; suppressed cells are hatched grey with no number. Colours
    run from 0 to the largest released count (negative noisy counts are shown as 0).
    """
    what = "crowd_layer"
    df, suppressed = _crowd_cells(cells, what, need_ci=True)
    where = _cell_districts(df["h3"], districts, what) if districts is not None else None
    shown = df.loc[~suppressed, "count"].astype(float).clip(lower=0)
    vmax = float(shown.max()) if len(shown) and shown.max() > 0 else 1.0
    colormap = cm.LinearColormap(list(colors), vmin=0.0, vmax=vmax, caption=caption)
    features = []
    for row, hidden in zip(df.itertuples(index=False), suppressed, strict=True):
        cell = str(row.h3)
        props: dict[str, Any] = {"h3": cell, "suppressed": bool(hidden)}
        if where is not None:
            props["district"] = where.get(cell, "outside the districts")
        if hidden:
            props.update(count=None, ci_low=None, ci_high=None, label=SUPPRESSED_LABEL,
                         fill=SUPPRESSED_FILL)
        else:
            count = float(row.count)
            props.update(count=round(count), ci_low=round(float(row.ci_low)),
                         ci_high=round(float(row.ci_high)),
                         label=f"{_fmt_count(count)} ({_fmt_interval(row.ci_low, row.ci_high)})",
                         fill=colormap(max(count, 0.0)))
        features.append({"type": "Feature", "id": cell, "properties": props,
                         "geometry": _cell_polygon(cell)})

    def style(feature: dict[str, Any]) -> dict[str, Any]:
        hidden = feature["properties"]["suppressed"]
        return {"fillColor": feature["properties"]["fill"], "color": "#666666",
                "weight": 1 if hidden else 0.6, "dashArray": "3 3" if hidden else None,
                "fillOpacity": 0.8 if hidden else fill_opacity}

    _ensure_hatch_pattern(m)
    layer = folium.GeoJson(
        {"type": "FeatureCollection", "features": features}, name=name, show=show,
        style_function=style,
        highlight_function=lambda _: {"weight": 2.5, "color": "#222222"},
        tooltip=folium.GeoJsonTooltip(
            fields=[*(["district"] if where is not None else []), "h3", "label"],
            aliases=[*(["District"] if where is not None else []), "H3 cell", "Count"],
            sticky=True),
    )
    layer.add_to(m)
    colormap.add_to(m)
    _ensure_legend_style(m)
    set_title(m, name)
    return layer


def _cell_districts(cells: pd.Series, districts: Any, what: str) -> dict[str, str]:
    """{cell: district name} for the district polygon holding each cell's centre."""
    gdf = _districts(districts, f"{what} districts")
    names = [_district_name(r) for r in gdf[[c for c in ("district_id", "name")
                                             if c in gdf.columns]].itertuples(index=False)]
    centres = [h3.cell_to_latlng(str(c)) for c in cells]
    points = gpd.GeoDataFrame({"h3": list(cells)}, crs=4326,
                              geometry=gpd.points_from_xy([c[1] for c in centres],
                                                          [c[0] for c in centres]))
    polys = gpd.GeoDataFrame({"district": names}, geometry=gdf.geometry.to_numpy(), crs=4326)
    joined = gpd.sjoin(points, polys, how="inner", predicate="within")
    return dict(zip(joined["h3"], joined["district"], strict=True))


def heatmap_layer(m: folium.Map, cells: pd.DataFrame, *, name: str = "Crowd heat (DP)",
                  radius: int = 25, blur: int = 18, min_opacity: float = 0.3,
                  show: bool = True) -> HeatMap:
    """A heat map of H3 cell centroids weighted by released count (suppressed cells and
    non-positive noisy counts are left out). Weights are scaled to the largest count."""
    what = "heatmap_layer"
    df, suppressed = _crowd_cells(cells, what, need_ci=False)
    kept = df.loc[~suppressed & (df["count"].astype(float) > 0)]
    top = float(kept["count"].max()) if len(kept) else 1.0
    points = []
    for cell, count in zip(kept["h3"], kept["count"], strict=True):
        lat, lng = h3.cell_to_latlng(str(cell))
        points.append([round(lat, 6), round(lng, 6), round(float(count) / top, 4)])
    layer = HeatMap(points, name=name, radius=radius, blur=blur, min_opacity=min_opacity,
                    show=show)
    layer.add_to(m)
    return layer


# --------------------------------------------------------------------------- districts


def _districts(districts: Any, what: str) -> Any:
    assert_released(districts, count_col=None, keys=("district_id",), what=what)
    _require(districts, ["district_id", "geometry"], what)
    if not isinstance(districts, gpd.GeoDataFrame):
        raise InputTypeError(f"{what}: districts must be a GeoDataFrame with polygon "
                             "geometries")
    kinds = set(districts.geom_type.dropna().astype(str))
    if not kinds <= {"Polygon", "MultiPolygon"}:
        raise InputError(f"{what}: district geometries must be polygons, got {sorted(kinds)}")
    if districts.crs is not None and districts.crs.to_epsg() != 4326:
        districts = districts.to_crs(4326)
    return districts


def _district_name(row: Any) -> str:
    name = getattr(row, "name", None) if "name" in row._fields else None
    return str(name) if name is not None and str(name) else str(row.district_id)


def districts_outline(m: folium.Map, districts: Any, *, name: str = "Districts",
                      labels: bool = True, color: str = "#444444", weight: float = 1.2,
                      show: bool = True) -> folium.FeatureGroup:
    """Thin district outlines and name labels, so a map without tiles stays readable.

    The outlines are not interactive: clicks and hovers reach the layers underneath.
    """
    what = "districts_outline"
    gdf = _districts(districts, what)
    cols = ["district_id", *(["name"] if "name" in gdf.columns else []), "geometry"]
    group = folium.FeatureGroup(name=name, show=show)
    folium.GeoJson(
        json.loads(gdf[cols].to_json()), name=name, interactive=False,
        style_function=lambda _: {"color": color, "weight": weight, "fill": False,
                                  "opacity": 0.9},
    ).add_to(group)
    if labels:
        style = ("font: 600 12px/1.2 sans-serif; color: #222; white-space: nowrap; "
                 "text-align: center; text-shadow: 0 0 3px #fff, 0 0 3px #fff, 0 0 3px #fff;")
        for row, point in zip(gdf.itertuples(index=False), gdf.representative_point(),
                              strict=True):
            text = html.escape(_district_name(row))
            folium.Marker(
                [point.y, point.x], interactive=False,
                icon=folium.DivIcon(html=f'<div style="{style}">{text}</div>',
                                    icon_size=(120, 16), icon_anchor=(60, 8),
                                    class_name="fedlab-district-label"),
            ).add_to(group)
    group.add_to(m)
    return group


#: basemap styles by (kind, class): water filled light blue, roads as light lines
BASEMAP_STYLES = {
    ("water", "river"): {"color": "#9ecae1", "weight": 0.5, "fillColor": "#c6dbef",
                         "fillOpacity": 0.9},
    ("water", "lake"): {"color": "#9ecae1", "weight": 0.5, "fillColor": "#c6dbef",
                        "fillOpacity": 0.9},
    ("road", "motorway"): {"color": "#f5f5f5", "weight": 5, "opacity": 1.0},
    ("road", "primary"): {"color": "#fafafa", "weight": 3, "opacity": 1.0},
}


def basemap_layer(m: folium.Map, basemap: Any, *, name: str = "Basemap",
                  show: bool = True) -> folium.FeatureGroup:
    """An offline vector backdrop under the data: water and roads of ``basemap`` (a
    GeoDataFrame with ``kind`` and ``class`` columns, e.g. :func:`fedlab_kit.data.load_basemap`
    for the sample city). Not interactive; add it first so the data draws on top. For a real
    city use tiles instead (``base_map(tiles=...)``; see the README)."""
    what = "basemap_layer"
    if not isinstance(basemap, gpd.GeoDataFrame):
        raise InputTypeError(f"{what}: basemap must be a GeoDataFrame (e.g. load_basemap())")
    _require(basemap, ["kind", "class", "geometry"], what)
    gdf = basemap.to_crs(4326) if basemap.crs is not None and basemap.crs.to_epsg() != 4326 \
        else basemap
    default = {"color": "#bdbdbd", "weight": 1, "fillOpacity": 0.3}
    group = folium.FeatureGroup(name=name, show=show, control=True)
    folium.GeoJson(
        json.loads(gdf[["kind", "class", "geometry"]].to_json()), name=name, interactive=False,
        style_function=lambda f: BASEMAP_STYLES.get(
            (f["properties"]["kind"], f["properties"]["class"]), default),
    ).add_to(group)
    group.add_to(m)
    return group


# --------------------------------------------------------------------------- funnel

_FUNNEL_COLUMNS = ("district_id", "stage", "count", "ci_low", "ci_high", "rate")


def _fmt_rate(value: Any) -> str:
    return f"{float(value):.1%}" if _finite(value) else "—"


def _js_template_safe(text: str) -> str:
    """folium puts popup HTML in a JS template literal: neutralise ` $ and backslashes."""
    return (text.replace("\\", "&#92;").replace("`", "&#96;").replace("$", "&#36;")
            .replace("\n", " "))


def funnel_popup_html(title: str, stages: pd.DataFrame, *, width: int = 280) -> str:
    """A small self-contained funnel chart (HTML bars + inline SVG, no JavaScript).

    ``stages`` has the funnel columns of one district, in stage order.
    """
    suppressed = _bool_column(stages, "suppressed", "funnel_popup_html")
    visible = stages.loc[~suppressed]
    top = max([*visible["count"].astype(float), *visible["ci_high"].astype(float), 1.0])
    bar_w = width - 10

    def x(value: Any) -> float:
        return round(min(max(float(value), 0.0), top) / top * bar_w, 1)

    parts = [f'<div style="width:{width}px;font:12px/1.35 sans-serif;color:#222">',
             f'<div style="font-weight:600;font-size:13px;margin-bottom:4px">'
             f"{html.escape(title)}</div>"]
    for row, hidden in zip(stages.itertuples(index=False), suppressed, strict=True):
        stage = html.escape(str(row.stage))
        parts.append('<div class="fedlab-funnel-stage" style="margin:3px 0 6px">')
        if hidden:
            parts.append(f"<div><b>{stage}</b>: <i>{SUPPRESSED_LABEL}</i></div>"
                         f'<svg width="{bar_w}" height="10"><rect width="{bar_w}" height="10"'
                         ' fill="url(#fedlab-hatch) #cccccc"/></svg></div>')
            continue
        parts.append(f"<div><b>{stage}</b>: {_fmt_count(row.count)} "
                     f'<span style="color:#555">({_fmt_interval(row.ci_low, row.ci_high)})'
                     "</span></div>")
        lo, hi = x(row.ci_low), x(row.ci_high)
        parts.append(
            f'<svg width="{bar_w}" height="12" role="img" aria-label="{stage}">'
            f'<rect x="0" y="1" width="{x(row.count)}" height="10" fill="#3182bd"/>'
            f'<line x1="{lo}" y1="6" x2="{hi}" y2="6" stroke="#111" stroke-width="1.2"/>'
            f'<line x1="{lo}" y1="2" x2="{lo}" y2="10" stroke="#111"/>'
            f'<line x1="{hi}" y1="2" x2="{hi}" y2="10" stroke="#111"/></svg>')
        details = []
        if _finite(getattr(row, "rate", None)):
            rate = f"conversion {_fmt_rate(row.rate)}"
            low, high = getattr(row, "rate_ci_low", None), getattr(row, "rate_ci_high", None)
            if _finite(low) and _finite(high):
                rate += f" (95% CI {_fmt_rate(low)}–{_fmt_rate(high)})"
            details.append(rate)
        lift = getattr(row, "lift", None)
        if _finite(lift):
            text = f"lift {float(lift):+.1%}"
            low, high = getattr(row, "lift_ci_low", None), getattr(row, "lift_ci_high", None)
            if _finite(low) and _finite(high):
                text += f" (95% CI {float(low):+.1%}–{float(high):+.1%})"
            details.append(text)
        if details:
            parts.append(f'<div style="color:#444">{" · ".join(details)}</div>')
        parts.append("</div>")
    parts.append('<div style="color:#777;font-size:10px">Counts are differentially private '
                 "(noisy); conversion is relative to the previous stage.</div></div>")
    return "".join(parts)


def _stage_order(funnel: pd.DataFrame, stage_order: Sequence[str] | None) -> list[Any]:
    stages = list(pd.unique(funnel["stage"]))
    if stage_order is not None:
        order = list(stage_order)
        unknown = [s for s in stages if s not in order]
        if unknown:
            raise InputError(f"funnel_layer: stages {unknown} are not in stage_order {order}")
        return [s for s in order if s in stages]
    dtype = funnel["stage"].dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return [s for s in dtype.categories if s in stages]
    return stages


def _funnel_shades(m: folium.Map, funnel: pd.DataFrame, suppressed: pd.Series,
                   stages: list[str], color_by: str | None, color_stage: str | None,
                   caption: str | None, what: str) -> dict[str, str]:
    """{district: fill colour} from ``color_by`` at one stage, and its legend on ``m``."""
    if color_by is None:
        return {}
    _require(funnel, [color_by], what)
    stage = color_stage if color_stage is not None else stages[-1]
    if stage not in stages:
        raise InputError(f"{what}: color_stage {stage!r} is not a stage; stages: {stages}")
    rows = funnel[(funnel["stage"] == stage) & ~suppressed]
    values = {str(d): float(v) for d, v in zip(rows["district_id"], rows[color_by], strict=True)
              if _finite(v)}
    if not values:
        return {}
    scale, unit = (100.0, " (%)") if color_by in PERCENT_COLUMNS else (1.0, "")
    values = {d: v * scale for d, v in values.items()}
    bound = max(abs(v) for v in values.values()) or 1.0
    if unit:  # one small, noisy district (+400%) must not wash out all the others
        bound = min(bound, PERCENT_SCALE_CAP)
        values = {d: max(-bound, min(bound, v)) for d, v in values.items()}
    text = caption or f"{color_by} at stage {stage!r}"
    if unit and "%" not in text:
        text += unit
    colormap = cm.LinearColormap(["#d7191c", "#f7f7f7", "#1a9641"], vmin=-bound, vmax=bound,
                                 caption=text)
    colormap.add_to(m)
    _ensure_legend_style(m)
    return {d: colormap(v) for d, v in values.items()}


def funnel_layer(m: folium.Map, districts: Any, funnel: pd.DataFrame, *,
                 name: str = "Campaign funnel (DP)", stage_order: Sequence[str] | None = None,
                 fill_color: str = "#3182bd", show: bool = True,
                 color_by: str | None = None, color_stage: str | None = None,
                 caption: str | None = None) -> folium.FeatureGroup:
    """District polygons whose popup is a small funnel chart of released stage counts.

    ``funnel`` has one row per (district, stage): ``district_id``, ``stage``, ``count``,
    ``ci_low``, ``ci_high`` (95 % interval of the count) and ``rate`` (conversion from the
    previous stage, a fraction; NaN for the first stage); optionally ``rate_ci_low``/
    ``rate_ci_high``, ``lift`` (relative uplift vs control, a fraction: 0.12 = +12 %) with
    ``lift_ci_low``/``lift_ci_high``, and ``suppressed`` (bool). Stages are drawn in
    ``stage_order``, else the categorical order, else the order of first appearance.
    Districts with no funnel rows are not drawn. With ``color_by`` (e.g. ``"lift"``) the
    districts are shaded by that column at ``color_stage`` (default: the last stage) on a
    diverging scale centred on 0, with a legend, so a static snapshot shows the effect.
    """
    what = "funnel_layer"
    assert_released(funnel, keys=("district_id", "stage"), what=f"{what} funnel")
    _require(funnel, _FUNNEL_COLUMNS, what)
    gdf = _districts(districts, f"{what} districts")
    suppressed = _bool_column(funnel, "suppressed", what)
    _check_released_numbers(funnel, ~suppressed, ["count", "ci_low", "ci_high"], what)
    known = set(gdf["district_id"].astype(str))
    unknown = sorted(set(funnel["district_id"].astype(str)) - known)
    if unknown:
        raise InputError(f"{what}: funnel rows for districts not in the districts frame: "
                         f"{unknown}")
    _ensure_hatch_pattern(m)
    order = {stage: i for i, stage in enumerate(_stage_order(funnel, stage_order))}
    group = folium.FeatureGroup(name=name, show=show)
    by_district = {str(k): v for k, v in funnel.groupby(funnel["district_id"].astype(str))}
    shade = _funnel_shades(m, funnel, suppressed, list(order), color_by, color_stage, caption,
                           what)
    set_title(m, caption or name)
    cols = ["district_id", *(["name"] if "name" in gdf.columns else []), "geometry"]
    for row in gdf[cols].itertuples(index=False):
        rows = by_district.get(str(row.district_id))
        if rows is None:
            continue
        rows = rows.assign(_order=rows["stage"].map(order)).sort_values("_order")
        label = _district_name(row)
        title = (f"{label} ({row.district_id})" if label != str(row.district_id)
                 else label)
        popup_html = _js_template_safe(funnel_popup_html(title, rows))
        feature = {"type": "Feature", "id": str(row.district_id),
                   "properties": {"district_id": str(row.district_id), "name": label},
                   "geometry": row.geometry.__geo_interface__}
        color = shade.get(str(row.district_id))
        style = ({"fillColor": color, "color": "#555555", "weight": 1.5, "fillOpacity": 0.6}
                 if color else {"fillColor": fill_color, "color": fill_color, "weight": 1.5,
                                "fillOpacity": 0.18})
        shape = folium.GeoJson(
            {"type": "FeatureCollection", "features": [feature]},
            style_function=lambda _, style=style: style,
            highlight_function=lambda _: {"fillOpacity": 0.35, "weight": 2.5},
            tooltip=folium.Tooltip(_js_template_safe(html.escape(f"{title}: click for the "
                                                                 "funnel"))),
        )
        shape.add_child(folium.Popup(popup_html, max_width=320))
        shape.add_to(group)
    group.add_to(m)
    return group


def campaign_funnel_maps(districts: Any, funnel: pd.DataFrame, *,
                         stage_order: Sequence[str] | None = None, group: str = "exposed",
                         color_stage: str | None = None, basemap: Any = None
                         ) -> dict[str, folium.Map]:
    """One map per campaign of a released funnel (``campaign``, ``group`` columns as
    :func:`fedlab_kit.analytics.funnel.funnel_frame` gives them): district outlines and
    ``group``'s funnel, shaded by its lift at ``color_stage``, titled with the campaign.
    Export each to its own file, named after the campaign (a static snapshot cannot switch
    campaigns). ``basemap``: as in :func:`base_map`."""
    what = "campaign_funnel_maps"
    _require(funnel, ["campaign", "group"], what)
    rows = funnel[funnel["group"] == group]
    if "level" in rows.columns:  # not the district totals over campaigns
        rows = rows[rows["level"] == "campaign"]
    if rows.empty:
        raise InputError(f"{what}: no funnel rows of group {group!r}; groups: "
                         f"{sorted(funnel['group'].astype(str).unique())}")
    out = {}
    for campaign, shown in rows.groupby(rows["campaign"].astype(str), sort=True):
        m = base_map(basemap=basemap)
        districts_outline(m, districts)
        funnel_layer(m, districts, shown, stage_order=stage_order, color_by="lift",
                     color_stage=color_stage,
                     caption=f"Purchase lift, {group} vs control ({campaign}, DP)")
        set_title(m, f"Campaign funnel: {campaign} (DP)", replace=True)
        out[str(campaign)] = m
    return out
