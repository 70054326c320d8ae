"""Keep a Leaflet map's view when its page is laid out late.

A map created while its iframe has no size (an output area still hidden, a background
browser tab, a notebook cell outside the viewport) is set up for a 0 x 0 box: ``fitBounds``
picks zoom 0, and Leaflet's own resize handling later keeps that zoom, so the analyst sees
an empty world map. :class:`KeepInView` remembers the view the page asked for (the start
view and any ``fitBounds``) while the map has no size, and applies it once it has one.
"""

from __future__ import annotations

from branca.element import MacroElement
from jinja2 import Template


class KeepInView(MacroElement):
    """A map child whose script re-applies the requested view when the map gets a size.

    Add it right after the map is created (as :func:`fedlab_kit.maps.base_map` does), so
    its script runs before any ``fitBounds`` of later layers.
    """

    _template = Template("""
{% macro script(this, kwargs) %}
(function (map) {
    const box = map.getContainer();
    const hasSize = () => box.clientWidth > 0 && box.clientHeight > 0;
    let asked = hasSize() ? null : {center: map.getCenter(), zoom: map.getZoom()};
    const fitBounds = map.fitBounds;
    map.fitBounds = function (bounds, options) {
        if (asked !== null) asked = {bounds: bounds, options: options};
        return fitBounds.call(this, bounds, options);
    };
    const check = function () {
        if (asked === null || !hasSize()) return;
        const view = asked;
        asked = null;
        map.invalidateSize({pan: false});
        if (view.bounds) fitBounds.call(map, view.bounds, view.options);
        else map.setView(view.center, view.zoom, {animate: false});
    };
    if (window.ResizeObserver) new ResizeObserver(check).observe(box);
    window.addEventListener("resize", check);
    window.addEventListener("load", check);
    document.addEventListener("visibilitychange", check);
})({{ this._parent.get_name() }});
{% endmacro %}
""")

    def __init__(self) -> None:
        super().__init__()
        self._name = "KeepInView"
