"""A PNG of a folium map without a browser: the kit's layers drawn with matplotlib.

Used by :func:`~fedlab_kit.maps.snapshot.snapshot` when no headless Chromium is there (or
with ``renderer="static"``). It draws what the exported HTML shows on first load: every
visible ``GeoJson`` layer with its own style (fill colour and opacity, outline, dashes; the
hatch of suppressed cells), the district name labels, each colour legend with its caption
and the page title. Popups, tooltips and tiles have no static form and are left out.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import folium
from branca.colormap import ColorMap
from shapely.geometry import shape

from .errors import MapExportError

_TAG = re.compile(r"<[^>]+>")
_HATCH_FILL = "#e0e0e0"
LEAFLET_BACKGROUND = "#dddddd"  # a tile-less Leaflet map's grey: colours blend alike


def _visible(element: Any) -> Iterator[Any]:
    """``element``'s descendants in drawing order, skipping layers hidden at load."""
    for child in list(element._children.values()):
        if getattr(child, "show", True) is False:
            continue
        yield child
        yield from _visible(child)


def _colour(value: Any) -> tuple[str, str | None]:
    """(matplotlib colour, hatch) of a CSS fill; the kit's SVG hatch becomes ``///``."""
    text = str(value or "#3388ff").strip()
    if text.startswith("url("):
        return _HATCH_FILL, "///"
    return text.split()[0] if " " in text else text, None


def _draw_geojson(ax: Any, layer: folium.GeoJson) -> int:
    from matplotlib.patches import Polygon

    style_fn = layer.style_function
    drawn = 0
    for feature in (layer.data or {}).get("features", []):
        style = dict(style_fn(feature)) if style_fn is not None else {}
        geom = shape(feature["geometry"])
        polygons = getattr(geom, "geoms", [geom])
        fill, hatch = _colour(style.get("fillColor"))
        filled = style.get("fill", True) is not False
        edge = style.get("color", "#3388ff")
        dashed = bool(style.get("dashArray"))
        for poly in polygons:
            if poly.geom_type in ("LineString", "LinearRing"):
                xs, ys = zip(*poly.coords, strict=True)
                ax.plot(xs, ys, color=edge, linewidth=float(style.get("weight", 1.0)) * 0.75,
                        alpha=float(style.get("opacity", 1.0)), solid_capstyle="round",
                        linestyle="--" if dashed else "-")
                drawn += 1
                continue
            if poly.geom_type != "Polygon":
                continue
            ring = list(poly.exterior.coords)
            if filled:
                ax.add_patch(Polygon(ring, closed=True, facecolor=fill, edgecolor="none",
                                     alpha=float(style.get("fillOpacity", 0.2)), hatch=None))
                if hatch:
                    ax.add_patch(Polygon(ring, closed=True, facecolor="none",
                                         edgecolor="#8a8a8a", hatch=hatch, linewidth=0))
            ax.add_patch(Polygon(ring, closed=True, facecolor="none", edgecolor=edge,
                                 linewidth=float(style.get("weight", 1.0)) * 0.75,
                                 alpha=float(style.get("opacity", 1.0)),
                                 linestyle="--" if dashed else "-"))
            drawn += 1
    return drawn


def _draw_legend(fig: Any, colormap: ColorMap, slot: int, width: int) -> None:
    """A horizontal colour bar with its caption and end values, top right."""
    import numpy as np

    bar_w = min(0.38, 360 / width)
    ax = fig.add_axes((0.98 - bar_w, 0.90 - 0.11 * slot, bar_w, 0.025))
    lo, hi = float(colormap.vmin), float(colormap.vmax)
    xs = np.linspace(lo, hi, 256)
    ax.imshow([[colormap.rgba_floats_tuple(x) for x in xs]], aspect="auto",
              extent=(lo, hi, 0, 1))
    ax.set_yticks([])
    ticks = [lo, (lo + hi) / 2, hi]
    ax.set_xticks(ticks, [f"{t:,.0f}" if max(abs(lo), abs(hi)) >= 10 else f"{t:.3g}"
                          for t in ticks])
    ax.tick_params(labelsize=8, length=2, pad=1)
    ax.set_title(html.unescape(str(colormap.caption or "")), fontsize=9, pad=3)
    ax.patch.set_alpha(0.85)


def static_png(m: folium.Map, path: Path | str, *, width: int = 1200, height: int = 800
               ) -> Path:
    """Write ``m`` as a ``width`` x ``height`` PNG drawn with matplotlib; returns ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(m, folium.Map):
        raise MapExportError(f"the static renderer draws folium maps, got {type(m).__name__}")
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    drawn, legends = 0, []
    for element in _visible(m):
        if isinstance(element, folium.GeoJson):
            drawn += _draw_geojson(ax, element)
        elif isinstance(element, folium.Marker):
            icon = next((c for c in element._children.values()
                         if isinstance(c, folium.DivIcon)), None)
            if icon is None:  # a plain pin has no label to draw
                continue
            text = html.unescape(_TAG.sub("", str(icon.options.get("html", ""))))
            lat, lon = element.location
            ax.text(lon, lat, text, ha="center", va="center", fontsize=8, weight="bold",
                    color="#222222", zorder=5,
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none",
                          "alpha": 0.6})
        elif isinstance(element, ColorMap):
            legends.append(element)
    if drawn == 0:
        raise MapExportError("static PNG export: the map has no polygon layer to draw")
    ax.autoscale_view()
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    pad_x, pad_y = (x1 - x0) * 0.03, (y1 - y0) * 0.03
    ax.set_xlim(x0 - pad_x, x1 + pad_x)
    ax.set_ylim(y0 - pad_y, y1 + pad_y)
    # equal ground distances: a degree of longitude is cos(latitude) of a degree of latitude
    ax.set_aspect(1 / max(math.cos(math.radians((y0 + y1) / 2)), 1e-6), adjustable="box")
    for slot, colormap in enumerate(legends):
        _draw_legend(fig, colormap, slot, width)
    title = getattr(m.get_root(), "title", None)
    if title:
        fig.text(0.02, 0.97, html.unescape(str(title)), fontsize=13, weight="bold",
                 va="top", ha="left")
    target = Path(path)
    fig.savefig(target, format="png", dpi=100, facecolor=LEAFLET_BACKGROUND)
    return target
