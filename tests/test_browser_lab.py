"""The walkthrough in JupyterLab, in a real browser, with the network blocked.

Starts JupyterLab on a copy of ``notebooks/``, opens the walkthrough in headless Chromium
(Selenium with Debian's ``chromium`` and ``chromium-driver``; every non-loopback address
goes to a dead proxy), runs all cells as an analyst would, and checks what a person would
look at: every widget rendered (no "Loading widget...", no raw widget repr), the maps
drawn with vector paths although Leaflet's CDN is out of reach, the kit's own funnel chart
drawn. Screenshots go to ``test-artifacts/browser/``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedlab_kit import maps
from fedlab_kit.maps.errors import MapExportError

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
TOKEN = "fedlab-browser-test"
LAB_ROOTS: dict[str, Path] = {}  # server URL -> the folder it serves


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, web_assets: Path) -> Iterator[str]:
    """A JupyterLab server on a copy of the notebooks; yields its base URL."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    port = _free_port()
    log = (root / "lab.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}",
         f"--ServerApp.root_dir={root / 'notebooks'}", "--LabApp.expose_app_in_browser=True",
         "--ServerApp.disable_check_xsrf=True", "--allow-root"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "JUPYTER_NO_CONFIG": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited: {(root / 'lab.log').read_text()[-2000:]}")
            time.sleep(0.5)
    LAB_ROOTS[url] = root / "notebooks"
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    try:
        binary = maps.find_browser()
    except MapExportError as exc:
        pytest.fail(f"these tests need headless Chromium: {exc}", pytrace=False)
    driver_path = os.environ.get("FEDLAB_CHROMEDRIVER") or shutil.which("chromedriver")
    if not driver_path:
        pytest.fail("these tests need chromedriver (apt-get install chromium-driver; "
                    "make test installs it where it can)", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1400,1000",
                "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=127.0.0.1;localhost"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: object, condition: str, seconds: float, what: str) -> object:
    """Poll a JavaScript expression until it is truthy; fail with ``what`` and a shot."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return ({condition});")
        if value:
            return value
        time.sleep(1)
    _shot(driver, f"timeout-{what.replace(' ', '-')}")
    pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}")


def _sideways(driver: object) -> list[str]:
    """Boxes in cell outputs that scroll sideways (the output itself, or a widget box in
    it), except data tables, which scroll by design."""
    return driver.execute_script(
        "return [...document.querySelectorAll('.jp-OutputArea-output, "
        ".jp-OutputArea-output *')].filter(e => !e.querySelector('table') && "
        "e.tagName !== 'TABLE' && e.scrollWidth > e.clientWidth + 1 && "
        "['auto', 'scroll'].includes(getComputedStyle(e).overflowX))"
        ".map(e => e.className + ': ' + (e.textContent || '').slice(0, 60));")


def _shot(driver: object, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def test_walkthrough_runs_in_jupyterlab_and_everything_renders(lab: str, browser) -> None:
    driver = browser
    driver.get(f"{lab}/lab/tree/00_walkthrough.ipynb?token={TOKEN}")
    _wait(driver, "window.jupyterapp && document.querySelector('.jp-Notebook')", 90,
          "the notebook to open")
    _wait(driver, "document.querySelector('.jp-Notebook .jp-Cell')", 30, "its cells")
    _wait(driver, "!document.querySelector('.jp-Toolbar-kernelStatus, "
                  ".jp-Notebook-ExecutionIndicator[data-status=\"busy\"]') || true", 10,
          "the kernel")
    time.sleep(3)  # the kernel connects after the page
    driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")
    # outputs only (the sources hold the same words); textContent: off-screen cells count
    texts = ("[...document.querySelectorAll('.jp-OutputArea-output')]"
             ".map(e => e.textContent).join('\\n')")
    _wait(driver, f"{texts}.includes('common customers at each party')", 420,
          "the last cell's output")
    _wait(driver, "![...document.querySelectorAll('.jp-InputArea-prompt')]"
                  ".some(p => p.textContent.includes('*'))", 120, "every cell to finish")
    shot = _shot(driver, "walkthrough")
    text = driver.execute_script(f"return {texts};")
    assert "Traceback" not in text, text[-3000:]
    assert "Loading widget" not in text
    for raw in ("VBox(children", "FunnelChart(", "HTML(value=", "<folium.folium.Map"):
        assert raw not in text, f"a widget shown as its repr: {raw}"
    assert "released: 280 funnel numbers and 300 crowd cells" in text
    # the kit's own anywidget chart is drawn (bars with interval whiskers)
    bars = driver.execute_script(
        "return document.querySelectorAll('svg.fedlab-funnel-chart rect.fedlab-bar').length;")
    assert bars >= 7, bars
    # maps inside the notebook draw vector paths with Leaflet inlined (no CDN here)
    frames = driver.find_elements("css selector", "iframe")
    drawn = []
    for frame in frames:
        driver.execute_script("arguments[0].scrollIntoView();", frame)
        time.sleep(1)
        driver.switch_to.frame(frame)
        try:
            drawn.append(driver.execute_script(
                "return document.querySelectorAll('path.leaflet-interactive').length;"))
        finally:
            driver.switch_to.default_content()
    assert sum(1 for n in drawn if n > 0) >= 2, drawn  # the funnel map and the crowd map
    # no map, chart or panel is wider than its cell (a horizontal scrollbar clips what is
    # under it); wide data tables scroll by design
    assert _sideways(driver) == []
    assert shot.stat().st_size > 20_000
    for selector, name in (("svg.fedlab-funnel-chart", "funnel-chart"),
                           ("iframe.fedlab-map", "map-in-notebook")):
        element = driver.find_elements("css selector", selector)
        if element:
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element[0])
            time.sleep(1)
            _shot(driver, name)


PANELS_NOTEBOOK = [
    "import numpy as np, pandas as pd, tempfile\n"
    "from pathlib import Path\n"
    "from fedlab_kit.data import load_districts, load_sample\n"
    "from fedlab_kit.dp import PrivacyLedger\n"
    "from fedlab_kit.widgets import ConnectPanel, MapPanel, PrivacyPanel, TrainingPanel\n"
    "ws = Path(tempfile.mkdtemp())",
    "ConnectPanel()",
    "rows = load_sample('retailer').select_dtypes('number').iloc[:300]\n"
    "TrainingPanel(None, rows.drop(columns=['converted']), rows['converted'], passive=[],\n"
    "              insecure_plaintext=True, n_estimators=3)",
    "PrivacyPanel(PrivacyLedger(ws / 'l.sqlite', total_epsilon=3.0, party='retailer'))",
    "import h3\n"
    "ids = [h3.latlng_to_cell(31.23 + i / 200, 121.47, 8) for i in range(5)]\n"
    "cells = pd.DataFrame({'h3': ids,\n"
    "                      'count': [50, 80, 30, 12, 60], 'ci_low': [30, 60, 10, 0, 40],\n"
    "                      'ci_high': [70, 100, 50, 30, 80], 'suppressed': [False] * 5})\n"
    "MapPanel(cells=cells, districts=load_districts())",
]


def test_panels_render_inside_their_cells(lab: str, browser,
                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    """The analyst panels in a notebook: each renders as a widget, none wider than its cell
    (a horizontal scrollbar would clip the key-file box)."""
    import nbformat

    driver = browser
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in PANELS_NOTEBOOK])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, LAB_ROOTS[lab] / "panels.ipynb")
    driver.get(f"{lab}/lab/tree/panels.ipynb?token={TOKEN}")
    _wait(driver, "window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell')", 90,
          "the panels notebook")
    time.sleep(3)
    driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")
    _wait(driver, "document.querySelectorAll('.jp-OutputArea-output .widget-vbox').length >= 4"
                  " && ![...document.querySelectorAll('.jp-InputArea-prompt')]"
                  ".some(p => p.textContent.includes('*'))", 180, "four panels")
    time.sleep(2)
    _shot(driver, "panels")
    text = driver.execute_script(
        "return [...document.querySelectorAll('.jp-OutputArea-output')]"
        ".map(e => e.textContent).join('\\n');")
    assert "Traceback" not in text and "Loading widget" not in text, text[-2000:]
    assert _sideways(driver) == []
