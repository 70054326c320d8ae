"""Fixtures shared by several test modules.

Imports of the kit happen inside the fixtures, so that collecting a module that uses none
of them (test_wire, say) loads nothing more than before.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import geopandas as gpd

    from fedlab_kit.demo.harness import RelayProcess


@pytest.fixture(scope="module")
def relay() -> Iterator[RelayProcess]:
    """A relay process on loopback, one per test module, stopped after the module."""
    from fedlab_kit.demo.harness import RelayProcess

    with RelayProcess.start() as proc:
        yield proc


@pytest.fixture(scope="module")
def districts() -> gpd.GeoDataFrame:
    """The shipped sample city's districts."""
    from fedlab_kit.data import load_districts

    return load_districts()


@pytest.fixture(scope="session")
def web_assets() -> Path:
    """The offline web assets for map export, fetched with npm if missing. Without them the
    tests that ask for them fail, never skip."""
    from fedlab_kit import maps
    from fedlab_kit.maps.errors import MapExportError

    try:
        return maps.ensure_assets()
    except MapExportError as exc:
        problem = str(exc)
    pytest.fail(f"offline web assets unavailable: {problem}", pytrace=False)
