"""Maps of released (differentially private) aggregates, exportable offline.

::

    import folium
    from fedlab_kit import maps
    from fedlab_kit.data import load_districts

    m = maps.base_map()                                  # no tiles: renders offline
    maps.crowd_layer(m, cells)                           # h3, count, ci_low, ci_high, suppressed
    maps.heatmap_layer(m, cells)
    maps.funnel_layer(m, load_districts(), funnel)       # district_id, stage, count, ci_*, rate
    maps.districts_outline(m, load_districts())
    folium.LayerControl().add_to(m)
    maps.snapshot(m, "out/map.html")                     # one file, no network needed
    maps.snapshot(m, "out/map.png")                      # headless Chromium

Layers accept only released aggregates (:func:`assert_released`). Offline snapshots inline
Leaflet & co. from pinned npm packages fetched once with ``python -m fedlab_kit.maps``.
"""

from fedlab_kit.maps.assets import (
    INSTALL_COMMAND,
    NPM_PACKAGES,
    NpmPackage,
    assets_dir,
    ensure_assets,
    inline_assets,
    missing_assets,
    remote_asset_refs,
)
from fedlab_kit.maps.errors import MapExportError, NotReleasedError
from fedlab_kit.maps.layers import (
    OSM,
    assert_released,
    base_map,
    basemap_layer,
    campaign_funnel_maps,
    crowd_layer,
    districts_outline,
    funnel_layer,
    funnel_popup_html,
    heatmap_layer,
    person_like_columns,
)
from fedlab_kit.maps.snapshot import find_browser, offline_html, snapshot

__all__ = [
    "INSTALL_COMMAND",
    "NPM_PACKAGES",
    "OSM",
    "MapExportError",
    "NotReleasedError",
    "NpmPackage",
    "assert_released",
    "assets_dir",
    "base_map",
    "basemap_layer",
    "campaign_funnel_maps",
    "crowd_layer",
    "districts_outline",
    "ensure_assets",
    "find_browser",
    "funnel_layer",
    "funnel_popup_html",
    "heatmap_layer",
    "inline_assets",
    "missing_assets",
    "offline_html",
    "person_like_columns",
    "remote_asset_refs",
    "snapshot",
]
