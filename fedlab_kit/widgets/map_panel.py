"""MapPanel: released aggregates on a folium map, layers chosen by checkboxes, exported to
HTML or PNG from buttons."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import folium
import ipywidgets as widgets
import pandas as pd

from .. import maps
from ..errors import FedlabError, InputError, InputTypeError
from ..maps.layers import DEFAULT_CENTER, DEFAULT_ZOOM
from ..maps.snapshot import iframe_html
from ._background import (
    Background,
    TaskPanel,
    box_html,
    describe_error,
    error_html,
    full_width,
)

LayerBuilder = Callable[[folium.Map], Any]

CROWD, HEAT, FUNNEL, DISTRICTS = "Crowd counts", "Crowd heat", "Campaign funnel", "Districts"
BASEMAP = "Basemap"


def _lift_shading(funnel: pd.DataFrame) -> dict[str, Any]:
    """``color_by`` lift at the last stage that has a lift, when the frame has any."""
    if "lift" not in funnel.columns or "stage" not in funnel.columns:
        return {}
    with_lift = funnel[pd.to_numeric(funnel["lift"], errors="coerce").notna()]
    if with_lift.empty:
        return {}
    stage = with_lift["stage"].iloc[-1]
    return {"color_by": "lift", "color_stage": stage,
            "caption": f"Lift at stage {stage!r}, exposed vs control (%)"}


class MapPanel(TaskPanel):
    """Checkboxes for the released layers, the map, and Export HTML / Export PNG buttons.

    Layers come from released frames (each drawn by :mod:`fedlab_kit.maps`, which refuses
    person-level frames):

    * ``cells`` (``h3``, ``count``, ``ci_low``, ``ci_high``, ``suppressed``): "Crowd counts"
      (:func:`~fedlab_kit.maps.crowd_layer`) and "Crowd heat"
      (:func:`~fedlab_kit.maps.heatmap_layer`);
    * ``funnel`` with ``districts``: "Campaign funnel" (:func:`~fedlab_kit.maps.funnel_layer`);
    * ``districts``: "Districts" outlines (:func:`~fedlab_kit.maps.districts_outline`);

    and from ``layers``, a mapping of name -> ``builder(m)`` adding anything to the folium map
    ``m`` (added after the built-in ones). ``shown`` names the layers ticked at first
    (default: one data layer, the crowd counts or else the funnel, plus the district outlines
    and the custom layers, so layers do not pile up in an export). The funnel is shaded by
    its lift (as a percentage, with a legend) where the frame has one. A layer that cannot
    be drawn is reported in the panel; the others are still drawn.

    The map is shown in ``panel.map_view`` (an ``HTML`` widget holding an iframe). With
    ``offline=True`` the page inlines Leaflet & co. and needs no network (see
    ``python -m fedlab_kit.maps``); the default, ``None``, does so whenever those assets
    are there and loads them from the CDN otherwise. ``panel.map`` is the folium map last
    drawn. ``basemap`` (e.g. :func:`fedlab_kit.data.load_basemap`) adds an offline backdrop
    of water and roads under the data (on by default). The export buttons write the ticked
    layers to the path in ``panel.path`` with the suffix ``.html`` or ``.png`` (headless
    Chromium, or matplotlib without one); ``panel.exported`` is the last file written.
    """

    def __init__(self, *, cells: pd.DataFrame | None = None, funnel: pd.DataFrame | None = None,
                 districts: Any = None, basemap: Any = None,
                 layers: Mapping[str, LayerBuilder] | None = None,
                 shown: Sequence[str] | None = None, path: str | os.PathLike[str] = "map.html",
                 center: Sequence[float] | None = None, zoom: int = DEFAULT_ZOOM,
                 tiles: str | None = None, layer_control: bool = True, offline: bool | None = None,
                 height: int = 450, png_size: tuple[int, int] = (1200, 800),
                 stage_order: Sequence[str] | None = None, browser: str | None = None) -> None:
        if funnel is not None and districts is None:
            raise InputTypeError("a funnel layer needs the districts too (districts=...)")
        self.cells, self.funnel, self.districts = cells, funnel, districts
        self.center, self.zoom, self.tiles = center, zoom, tiles
        if offline is None:
            offline = not maps.missing_assets()
        self.layer_control, self.offline, self.height = layer_control, offline, height
        self.png_size, self.browser = png_size, browser
        self.builders: dict[str, LayerBuilder] = {}
        self.basemap = basemap
        if basemap is not None:  # first: the data draws on top of it
            self.builders[BASEMAP] = lambda m: maps.basemap_layer(m, self.basemap)
        if cells is not None:
            self.builders[CROWD] = lambda m: maps.crowd_layer(m, self.cells,
                                                               districts=self.districts)
            self.builders[HEAT] = lambda m: maps.heatmap_layer(m, self.cells)
        if funnel is not None:
            self.builders[FUNNEL] = lambda m: maps.funnel_layer(
                m, self.districts, self.funnel, stage_order=stage_order,
                **_lift_shading(self.funnel))
        if districts is not None:
            self.builders[DISTRICTS] = lambda m: maps.districts_outline(m, self.districts)
        for name, builder in (layers or {}).items():
            if name in self.builders:
                raise InputError(f"layer name {name!r} is taken by a built-in layer")
            if not callable(builder):
                raise InputTypeError(f"layer {name!r}: expected a function builder(m), got "
                                     f"{type(builder).__name__}")
            self.builders[name] = builder
        if not set(self.builders) - {BASEMAP}:
            raise InputTypeError("MapPanel needs something to draw: cells, funnel + districts, "
                                 "districts or layers={name: builder(m)}")
        if shown is None:
            first = [n for n in (CROWD, FUNNEL) if n in self.builders][:1]
            shown = [*first, *(n for n in self.builders if n not in (CROWD, HEAT, FUNNEL))]
        shown = list(shown)
        unknown = [s for s in shown if s not in self.builders]
        if unknown:
            raise InputError(f"shown names unknown layers {unknown}; layers: "
                             f"{list(self.builders)}")
        self.map: folium.Map | None = None
        self.exported: Path | None = None
        self.layer_errors: dict[str, str] = {}
        self.layer_boxes = {name: widgets.Checkbox(value=name in shown, description=name,
                                                   indent=False)
                            for name in self.builders}
        self.path = widgets.Text(value=str(path), description="File",
                                 placeholder="out/map.html (suffix set by the button)",
                                 layout=widgets.Layout(width="60%"))
        self.html_button = widgets.Button(description="Export HTML", icon="download")
        self.png_button = widgets.Button(description="Export PNG", icon="image")
        self.status = widgets.HTML("")
        self.layer_status = widgets.HTML("")
        self.map_view = widgets.HTML("", layout=full_width())
        self._task = Background(self.status, name="fedlab-map-export")
        for box in self.layer_boxes.values():
            box.observe(lambda _: self.refresh(), names="value")
        self.html_button.on_click(lambda _: self.export(".html"))
        self.png_button.on_click(lambda _: self.export(".png"))
        self.widget = widgets.VBox([
            widgets.HTML("<b>Map of released aggregates</b>"),
            widgets.HBox(list(self.layer_boxes.values())), self.layer_status, self.map_view,
            widgets.HBox([self.path, self.html_button, self.png_button]), self.status,
        ])
        self.refresh()

    # ------------------------------------------------------------------ state
    @property
    def selected(self) -> list[str]:
        """The ticked layers, in drawing order."""
        return [name for name, box in self.layer_boxes.items() if box.value]


    # -------------------------------------------------------------------- map
    def _start_view(self) -> tuple[list[float], list[list[float]] | None]:
        """(centre, bounds to fit or None) of the data, unless a centre was given."""
        if self.center is not None:
            return list(self.center), None
        bounds = None
        try:
            if self.districts is not None and hasattr(self.districts, "total_bounds"):
                frame = self.districts
                if getattr(frame, "crs", None) is not None and frame.crs.to_epsg() != 4326:
                    frame = frame.to_crs(4326)
                west, south, east, north = (float(v) for v in frame.total_bounds)
                bounds = [[south, west], [north, east]]
            elif self.cells is not None and "h3" in self.cells.columns and len(self.cells):
                import h3

                points = [h3.cell_to_latlng(str(c)) for c in self.cells["h3"]]
                lats, lngs = [p[0] for p in points], [p[1] for p in points]
                bounds = [[min(lats), min(lngs)], [max(lats), max(lngs)]]
        except Exception:  # a bad frame is reported by its layer, not here
            bounds = None
        if bounds is None:
            return list(DEFAULT_CENTER), None
        centre = [(bounds[0][0] + bounds[1][0]) / 2, (bounds[0][1] + bounds[1][1]) / 2]
        return centre, bounds

    def build_map(self, names: Sequence[str] | None = None) -> tuple[folium.Map, dict[str, str]]:
        """A new folium map with the layers ``names`` (default: the ticked ones) and the
        errors of the layers that could not be drawn (name -> message)."""
        names = self.selected if names is None else list(names)
        centre, bounds = self._start_view()
        m = maps.base_map(centre, self.zoom, self.tiles)
        errors: dict[str, str] = {}
        for name in names:
            try:
                self.builders[name](m)
            except Exception as exc:  # the analyst's frame: say what is wrong with it
                errors[name] = describe_error(exc)
        if bounds is not None:
            m.fit_bounds(bounds)
        if self.layer_control and len(names) > len(errors):
            folium.LayerControl(collapsed=False).add_to(m)
        return m, errors

    def refresh(self) -> None:
        """Redraw the map with the ticked layers (done on every tick / untick)."""
        try:
            m, errors = self.build_map()
            page = (maps.offline_html(m) if self.offline
                    else m.get_root().render())
        except Exception as exc:
            self.map_view.value = ""
            self.layer_status.value = error_html("Cannot draw the map", exc)
            return
        self.map, self.layer_errors = m, errors
        self.layer_status.value = "".join(
            error_html(f"Layer {name!r} cannot be drawn", text)
            for name, text in errors.items())
        if not self.selected:
            self.layer_status.value = box_html("No layer ticked: the map is empty.", "info")
        self.map_view.value = iframe_html(page, self.height)

    # ----------------------------------------------------------------- export
    def target(self, suffix: str) -> Path:
        """The path in the File box with ``suffix`` (``.html`` or ``.png``)."""
        text = self.path.value.strip()
        if not text:
            raise FedlabError("enter the file to write (e.g. out/map.html)")
        path = Path(text).expanduser()
        if path.is_dir() or text.endswith(("/", os.sep)):
            raise FedlabError(f"{text!r} is a folder: give a file name, e.g. {text}/map{suffix}")
        return path.with_suffix(suffix) if path.suffix.lower() != suffix else path

    def export(self, suffix: str) -> bool:
        """Write the ticked layers to the File box's path as ``suffix`` (in the background);
        ``False`` when refused (an export running, or no usable path)."""
        if suffix not in (".html", ".png"):
            raise InputError(f"suffix must be '.html' or '.png', got {suffix!r}")
        kind = suffix[1:].upper()
        if self._task.busy:
            self.status.value = box_html("An export is already running.", "warning",
                                         "Export refused")
            return False
        try:
            path = self.target(suffix)
            if not self.selected:
                raise FedlabError("no layer ticked: tick at least one layer to export")
        except FedlabError as exc:
            self.status.value = error_html(f"Cannot export {kind}", exc)
            return False
        names = self.selected
        self.exported = None
        self.status.value = box_html(f"Writing {path} ({', '.join(names)})…", "info")
        self.html_button.disabled = self.png_button.disabled = True
        return self._task.start(self._export, path, names, title=f"{kind} export failed",
                                on_success=self._written, on_done=self._buttons)

    def _export(self, path: Path, names: list[str]) -> Path:
        m, errors = self.build_map(names)
        if errors:
            name, text = next(iter(errors.items()))
            raise FedlabError(f"layer {name!r} cannot be drawn: {text}")
        width, height = self.png_size
        return maps.snapshot(m, path, width=width, height=height, browser=self.browser)

    def _written(self, path: Path) -> None:
        self.exported = path.resolve()
        size = self.exported.stat().st_size
        self.status.value = box_html(f"Wrote {self.exported} ({size / 1024:,.0f} kB).", "ok")

    def _buttons(self) -> None:
        self.html_button.disabled = self.png_button.disabled = False
