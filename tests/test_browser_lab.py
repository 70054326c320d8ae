"""The walkthrough in JupyterLab, in a real browser, with the network blocked.

Starts JupyterLab on a copy of ``notebooks/``, opens the walkthrough in headless Chromium
(Selenium with Debian's ``chromium`` and ``chromium-driver``; every non-loopback address
goes to a dead proxy), runs all cells as an analyst would, and checks what a person would
look at: every widget rendered (no "Loading widget...", no raw widget repr), the maps
drawn with vector paths although Leaflet's CDN is out of reach, the kit's own funnel chart
drawn. Then the three role notebooks in three tabs, three kernels and one relay, every
button clicked in the page as the analysts would. Screenshots go to
``test-artifacts/browser/``.
"""

from __future__ import annotations

import json
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
def small_city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 5,000-person city instead of the shipped 20,000, for the lab's kernels (and the
    peers they spawn) and for this process's expected values: the same notebooks, panels and
    maps in about two thirds of the time."""
    from fedlab_kit.data import make_city, write_city

    city = tmp_path_factory.mktemp("city")
    write_city(make_city(persons=5000, seed=7), city)
    mp = pytest.MonkeyPatch()
    mp.setenv("FEDLAB_SAMPLE_DIR", str(city))
    try:
        yield city
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, web_assets: Path,
        small_city: Path) -> Iterator[str]:
    """A JupyterLab server on a copy of the notebooks; yields its base URL."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    settings = root / "lab-settings"  # the overrides `make lab` and Binder install
    settings.mkdir()
    shutil.copy(ROOT / "binder" / "overrides.json", settings / "overrides.json")
    port = _free_port()
    log = (root / "lab.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}",
         f"--ServerApp.root_dir={root / 'notebooks'}", "--LabApp.expose_app_in_browser=True",
         "--ServerApp.disable_check_xsrf=True", f"--LabApp.app_settings_dir={settings}",
         "--allow-root"],
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
        time.sleep(0.25)
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
    _run_all_in(driver, "00_walkthrough.ipynb")
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
    # the kit's lab settings keep JupyterLab's "news?" toast off the notebook
    assert "official Jupyter news" not in driver.page_source
    for raw in ("VBox(children", "FunnelChart(", "HTML(value=", "<folium.folium.Map"):
        assert raw not in text, f"a widget shown as its repr: {raw}"
    assert "released: 280 funnel numbers and 300 crowd cells" in text
    assert "iterations: test AUC with partners" in text  # the logistic regression cell
    assert "coefficient per unit" in text
    # the kit's own anywidget chart is drawn (bars with interval whiskers)
    # (4 stages x exposed/control: a bar each, or a "suppressed (small count)" note)
    bars, notes = driver.execute_script(
        "const svg = document.querySelector('svg.fedlab-funnel-chart');"
        "return [svg.querySelectorAll('rect.fedlab-bar').length,"
        "        svg.querySelectorAll('text.fedlab-suppressed').length];")
    assert bars + notes == 8 and bars >= 4, (bars, notes)
    # maps inside the notebook draw vector paths with Leaflet inlined (no CDN here)
    frames = driver.find_elements("css selector", "iframe")
    drawn = []
    for frame in frames:
        driver.execute_script("arguments[0].scrollIntoView();", frame)
        driver.switch_to.frame(frame)
        try:  # a map draws once it is on screen: up to 3 s each
            for _ in range(15):
                drawn_here = driver.execute_script(
                    "return document.querySelectorAll('path.leaflet-interactive').length;")
                if drawn_here:
                    break
                time.sleep(0.2)
            drawn.append(drawn_here)
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


def _run_all_in(driver: object, name: str) -> None:
    """Once the notebook ``name`` has an idle kernel, make it current and Run All."""
    nb = ("[...window.jupyterapp.shell.widgets('main')].find(w => w.context && "
          f"w.context.path.endsWith({json.dumps(name)}))")
    _wait(driver, _idle(nb), 90, f"the kernel of {name} to be idle")
    driver.execute_script(f"window.jupyterapp.shell.activateById({nb}.id);"
                          f"window.jupyterapp.commands.execute('notebook:run-all-cells');")


def _open_and_run(driver: object, lab: str, name: str, sources: list[str],
                  workspace: str | None = None) -> None:
    """Write a notebook of these code cells into the lab, open it and Run All (in a fresh
    ``workspace`` of its own if given: no other notebook open beside it)."""
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, LAB_ROOTS[lab] / name)
    where = f"workspaces/{workspace}/tree/{name}?reset&" if workspace else f"tree/{name}?"
    driver.get(f"{lab}/lab/{where}token={TOKEN}")
    _wait(driver, "window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell')", 90,
          f"the notebook {name}")
    _run_all_in(driver, name)


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
    "TrainingPanel(None, rows.drop(columns=['converted']), rows['converted'], passive=[],\n"
    "              insecure_plaintext=True, model='logistic', max_iter=30)",
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
    driver = browser
    _open_and_run(driver, lab, "panels.ipynb", PANELS_NOTEBOOK)
    _wait(driver, "document.querySelectorAll('.jp-OutputArea-output .widget-vbox').length >= 5"
                  " && ![...document.querySelectorAll('.jp-InputArea-prompt')]"
                  ".some(p => p.textContent.includes('*'))", 180, "five panels")
    time.sleep(2)
    _shot(driver, "panels")
    text = driver.execute_script(
        "return [...document.querySelectorAll('.jp-OutputArea-output')]"
        ".map(e => e.textContent).join('\\n');")
    assert "Traceback" not in text and "Loading widget" not in text, text[-2000:]
    assert _sideways(driver) == []
    # the Model choice: logistic regression trains from its button and shows coefficients
    # (this notebook may share the lab with others: look for the panel in every output)
    find = ("[...document.querySelectorAll('.jp-OutputArea-output')].find(e => "
            "e.textContent.includes('Logistic regression training (label holder)'))")
    button = _wait(driver, f"(() => {{ const p = {find}; return p && [...p.querySelectorAll("
                           "'button')].find(b => b.textContent.trim() === 'Train'); })()", 60,
                   "the logistic panel's Train button")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
    time.sleep(0.5)
    button.click()
    _wait(driver, f"(() => {{ const p = {find}; return p && (p.textContent.includes("
                  "'Converged after') || p.textContent.includes('Reached max_iter')); })()",
          120, "the logistic result")
    panel = driver.execute_script(f"return {find}.textContent;")
    assert "Your coefficients (per std)" in panel and "past_spend" in panel, panel
    _shot(driver, "panels-logistic")


# ------------------------------------------------------------------ three analysts, three tabs
ROLE_TABS = ("retailer", "media", "operator")
# the notebook panel of the current tab (each tab is a workspace of its own with one notebook;
# shell.currentWidget stays null in a tab that never had the focus)
NB = "[...window.jupyterapp.shell.widgets('main')].find(w => w.content && w.sessionContext)"
OUTPUTS = f"[...{NB}.node.querySelectorAll('.jp-OutputArea-output')]"
CONNECT, PSI = "Connect to the room", "Private set intersection"
BOTH_PRESENT = "p.querySelectorAll('table.fedlab-presence tr[data-state=\"present\"]').length === 2"
TRAIN, SERVE = "SecureBoost training (label holder)", "SecureBoost training (feature holder)"


def _command(driver: object, command: str) -> None:
    """Run a JupyterLab command on the current tab's notebook."""
    driver.execute_script(f"window.jupyterapp.commands.execute(arguments[0], "
                          f"{{semanticWidget: {NB}.id}});", command)


def _panel(title: str) -> str:
    """JS: the output holding the panel headed ``title`` in the current tab (or undefined)."""
    return f"{OUTPUTS}.find(e => e.textContent.includes({json.dumps(title)}))"


def _wait_panel(driver: object, title: str, condition: str, seconds: float,
                what: str) -> object:
    """Wait until the JavaScript ``condition`` over ``p`` (the panel headed ``title``) holds."""
    return _wait(driver, f"(() => {{ const p = {_panel(title)}; return p && ({condition}); }})()",
                 seconds, what)


def _panel_text(driver: object, title: str) -> str:
    return driver.execute_script(f"const p = {_panel(title)}; return p ? p.textContent : '';")


def _outputs_text(driver: object) -> str:
    return driver.execute_script(f"return {OUTPUTS}.map(e => e.textContent).join('\\n');")


def _idle(nb: str) -> str:
    """JS: the notebook panel ``nb`` has a connected, idle kernel."""
    return (f"{nb} && {nb}.sessionContext && {nb}.sessionContext.isReady && "
            f"{nb}.sessionContext.session && {nb}.sessionContext.session.kernel && "
            f"{nb}.sessionContext.session.kernel.connectionStatus === 'connected' && "
            f"{nb}.sessionContext.session.kernel.status === 'idle'")


KERNEL_IDLE = _idle(NB)


def _run_all(driver: object, role: str) -> None:
    """Run All in the current tab, once its kernel is up."""
    _wait(driver, KERNEL_IDLE, 90, f"the {role} kernel to be idle")
    _command(driver, "notebook:run-all-cells")


def _ran_all(driver: object, role: str, last_words: str) -> None:
    """Wait until every cell of the current tab ran (the last one printed ``last_words``)."""
    _wait(driver, f"{OUTPUTS}.some(e => e.textContent.includes({json.dumps(last_words)})) && "
                  f"![...{NB}.node.querySelectorAll('.jp-InputArea-prompt')]"
                  ".some(p => p.textContent.includes('*'))", 180,
          f"Run All to finish in the {role} tab")


def _click(driver: object, title: str, label: str, role: str) -> None:
    """Click, as a person would, the enabled button ``label`` of the panel headed ``title``."""
    button = _wait_panel(driver, title, "[...p.querySelectorAll('button')].find(b => "
                         f"b.textContent.trim() === {json.dumps(label)} && !b.disabled)",
                         60, f"the {label} button in the {role} tab")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
    time.sleep(0.5)
    button.click()


def _type(driver: object, title: str, label: str, value: str, role: str) -> None:
    """Type ``value`` into the box labelled ``label`` of the panel headed ``title`` (and
    leave the box, which sends the new value to the kernel)."""
    from selenium.webdriver.common.keys import Keys

    box = _wait_panel(driver, title, "[...p.querySelectorAll('.widget-inline-hbox')]"
                      ".filter(b => b.querySelector('label') && "
                      f"b.querySelector('label').textContent.trim() === {json.dumps(label)})"
                      ".map(b => b.querySelector('input'))[0]", 30,
                f"the {label} box in the {role} tab")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(value, Keys.TAB)
    assert box.get_attribute("value") == value, box.get_attribute("value")


def _run_cell_with(driver: object, needle: str, role: str) -> None:
    """Make the code cell whose source holds ``needle`` active and run just that cell."""
    index = driver.execute_script(
        f"const nb = {NB}.content;"
        "const i = nb.widgets.findIndex(c => c.model.type === 'code' && "
        "c.model.sharedModel.getSource().includes(arguments[0]));"
        "if (i >= 0) { nb.activeCellIndex = i; nb.deselectAll(); }"
        "return i;", needle)
    assert index >= 0, f"{role}: no cell with {needle!r}"
    _command(driver, "notebook:run-cell")


def _look(driver: object, role: str, phase: str, focus: str | None = None) -> str:
    """What the analyst sees in this tab is clean: no traceback, every widget drawn. The
    screenshot shows the panel headed ``focus``."""
    if focus is not None:
        driver.execute_script(f"const p = {_panel(focus)}; p && p.scrollIntoView();")
    time.sleep(0.3)
    _shot(driver, f"tab-{role}-{phase}")
    text = _outputs_text(driver)
    assert "Traceback" not in text, f"{role} ({phase}): {text[-3000:]}"
    for broken in ("Loading widget", "Error displaying widget"):
        assert broken not in text, f"{role} ({phase}): a widget was not drawn: {broken}"
    for raw in ("VBox(children", "HTML(value=", "Button(description"):
        assert raw not in text, f"{role} ({phase}): a widget shown as its repr: {raw}"
    assert _sideways(driver) == [], f"{role} ({phase})"
    return text


def test_three_role_notebooks_in_three_tabs(lab: str, browser, tmp_path: Path) -> None:
    """Three analysts, three JupyterLab tabs, three kernels, one relay: Connect, Run PSI,
    Train / Serve training, all clicked in the browser; then the media owner restarts its
    kernel while the retailer and the operator run a new PSI."""
    import nbformat
    from test_role_notebooks import inject, read

    from fedlab_kit.data import load_sample
    from fedlab_kit.demo.harness import RelayProcess, create_room

    driver = browser
    first = driver.current_window_handle
    common = set.intersection(*(set(load_sample(r)["user_id"]) for r in ROLE_TABS))
    tabs: dict[str, str] = {}
    relay = RelayProcess.start()
    try:
        invitation, keys = create_room(list(ROLE_TABS), tmp_path / "keys", relay.host,
                                       relay.port)
        for role in ROLE_TABS:
            (tmp_path / role).mkdir()
            nb = read(role)
            inject(nb, {"KEY_FILE": str(keys[role]), "INVITATION": invitation.to_string(),
                        "WORKSPACE": str(tmp_path / role), "AUTO_RUN": False})
            nbformat.write(nb, LAB_ROOTS[lab] / f"tab_{role}.ipynb")

        # each analyst opens their notebook in a tab of their own (a workspace each) and
        # presses Run All: with AUTO_RUN False the later cells say which button to press
        for role in ROLE_TABS:
            driver.switch_to.new_window("tab")
            tabs[role] = driver.current_window_handle
            driver.get(f"{lab}/lab/workspaces/{role}/tree/tab_{role}.ipynb?reset&token={TOKEN}")
            _wait(driver, f"window.jupyterapp && {NB} && {NB}.content && "
                          f"{NB}.content.widgets.length > 5", 90, f"the {role} notebook to open")
        for role in ROLE_TABS:  # the three kernels start and run at the same time
            driver.switch_to.window(tabs[role])
            _run_all(driver, role)
        for role in ROLE_TABS:
            driver.switch_to.window(tabs[role])
            _ran_all(driver, role, "Connect first (step 2).")
            text = _look(driver, role, "1-run-all")
            assert "press Run PSI above" in text, role

        # Connect in every tab; each panel lists the two others as present
        for role in ROLE_TABS:
            driver.switch_to.window(tabs[role])
            _click(driver, CONNECT, "Connect", role)
        for role in ROLE_TABS:
            driver.switch_to.window(tabs[role])
            _wait_panel(driver, CONNECT, BOTH_PRESENT, 90,
                        f"the {role} panel to show both other parties present")
            text = _panel_text(driver, CONNECT)
            assert f"Connected as '{role}'" in text, text
        for role in ROLE_TABS:
            driver.switch_to.window(tabs[role])
            _look(driver, role, "2-connected", CONNECT)

        # Run PSI in every tab; each ends with the same common customers
        for role in ROLE_TABS:
            driver.switch_to.window(tabs[role])
            _click(driver, PSI, "Run PSI", role)
        for role in ROLE_TABS:
            driver.switch_to.window(tabs[role])
            _wait_panel(driver, PSI, "p.textContent.includes('PSI finished in') || "
                                     "p.textContent.includes('PSI failed')", 180,
                        f"PSI to end in the {role} tab")
            text = _panel_text(driver, PSI)
            assert "PSI finished in" in text, f"{role}: {text}"
            assert f"Common customers{len(common)}" in text, f"{role}: {text}"
        for role in ROLE_TABS:
            driver.switch_to.window(tabs[role])
            _look(driver, role, "3-psi", PSI)

        # the training cell again, now that PSI is done; Serve training, then Train
        for role in ROLE_TABS:
            driver.switch_to.window(tabs[role])
            _run_cell_with(driver, "TrainingPanel(" if role == "retailer"
                           else "PassiveTrainingPanel(", role)
            _wait(driver, _panel(TRAIN if role == "retailer" else SERVE), 60,
                  f"the training panel in the {role} tab")
        for role in ("media", "operator", "retailer"):
            driver.switch_to.window(tabs[role])
            if role == "retailer":  # three trees instead of the notebook's ten: quicker
                _type(driver, TRAIN, "Trees", "3", role)
                _click(driver, TRAIN, "Train", role)
            else:
                _click(driver, SERVE, "Serve training", role)
        driver.switch_to.window(tabs["retailer"])
        _wait_panel(driver, TRAIN, "p.textContent.includes('Training finished') || "
                                   "p.textContent.includes('failed')", 300,
                    "the retailer's training to end")
        text = _panel_text(driver, TRAIN)
        assert "Training finished: kept 3 of 3 trees" in text, text
        assert "Held-out auc (eval set 1)" in text, text
        assert "Partiesretailer, media, operator" in text, text
        for role in ("media", "operator"):
            driver.switch_to.window(tabs[role])
            _wait_panel(driver, SERVE, "p.textContent.includes(\"Training of 'retailer' "
                                       "finished\")", 60,
                        f"the {role} panel to show the training finished")
        for role in ROLE_TABS:
            driver.switch_to.window(tabs[role])
            _look(driver, role, "4-trained", TRAIN if role == "retailer" else SERVE)
        driver.switch_to.window(tabs["retailer"])
        driver.execute_script("document.querySelector('table.fedlab-training-result')"
                              ".scrollIntoView({block: 'center'});")
        time.sleep(1)
        _shot(driver, "tab-retailer-4-result")

        # a new PSI at the retailer and the operator; then the media owner restarts its kernel
        for role in ("retailer", "operator"):
            driver.switch_to.window(tabs[role])
            _click(driver, PSI, "Run PSI", role)
            _wait_panel(driver, PSI, "p.textContent.includes('Running PSI on column')", 30,
                        f"the new PSI to start in the {role} tab")
        driver.switch_to.window(tabs["media"])
        driver.set_script_timeout(90)  # Kernel > Restart Kernel (without the dialog)
        restarted = driver.execute_async_script(
            f"const done = arguments[arguments.length - 1]; {NB}.sessionContext.restartKernel()"
            ".then(() => done(true), e => done(String(e)));")
        assert restarted is True, f"the media kernel did not restart: {restarted}"
        # the run stops at once (it does not wait for media to come back), saying why; the
        # earlier result stays on show
        for role in ("retailer", "operator"):
            driver.switch_to.window(tabs[role])
            _wait_panel(driver, PSI, "p.textContent.includes('PSI failed') && "
                                     "!p.textContent.includes('Running…')", 60,
                        f"the {role} PSI panel to say the run stopped")
            text = _panel_text(driver, PSI)
            # the operator may read it as the retailer's abort: "'retailer' stopped PSI: ..."
            assert "'media' left the room (its kernel or process stopped) during PSI; run PSI " \
                   "again at every party once 'media' is back" in text, f"{role}: {text}"
            assert "This run failed; the result below is the earlier one." in text, text
            assert f"Common customers{len(common)}" in text, f"{role}: {text}"
        # the media analyst runs the notebook again in the new kernel and connects again
        driver.switch_to.window(tabs["media"])
        _wait(driver, KERNEL_IDLE, 90, "the media kernel to be back")
        _command(driver, "notebook:clear-all-cell-outputs")
        _run_all(driver, "media")
        _ran_all(driver, "media", "Connect first (step 2).")
        _click(driver, CONNECT, "Connect", "media")
        _wait_panel(driver, CONNECT, BOTH_PRESENT, 90,
                    "the restarted media kernel to see both other parties")
        text = _look(driver, "media", "5-back", CONNECT)
        assert "press Run PSI above" in text
        # the others see it back, marked "restarted" (its old kernel's state is gone)
        for role in ("retailer", "operator"):
            driver.switch_to.window(tabs[role])
            _wait_panel(driver, CONNECT, "p.querySelector('table.fedlab-presence "
                                         "tr[data-peer=\"media\"][data-state=\"restarted\"]')",
                        60, f"the {role} panel to show media back as restarted")
            log = _panel_text(driver, CONNECT)
            assert "media left" in log and "media restarted" in log, log
            _look(driver, role, "5-media-back", CONNECT)
            text = _look(driver, role, "5-psi-stopped", PSI)
            assert "PSI failed" in text
    finally:
        for handle in tabs.values():  # end the kernels, close the tabs
            try:
                driver.switch_to.window(handle)
                driver.execute_script(f"{NB} && {NB}.sessionContext.shutdown();")
                time.sleep(0.5)
                driver.close()
            except Exception:  # best effort: the lab fixture ends them too
                pass
        driver.switch_to.window(first)
        relay.stop()


# ------------------------------------------------------------------ maps laid out late
LEAFLET_VIEW = ("const m = Object.keys(window).filter(k => k.startsWith('map_'))"
                ".map(k => window[k]).find(v => v instanceof L.Map);"
                "if (!m) return null; const s = m.getSize(), c = m.getCenter();"
                "return [s.x, s.y, m.getZoom(), c.lat, c.lng, document.visibilityState];")


def _leaflet_view(driver: object, frame: object) -> list | None:
    """[width, height, zoom, lat, lng, visibility] of the Leaflet map in ``frame``."""
    driver.switch_to.frame(frame)
    try:
        return driver.execute_script(LEAFLET_VIEW)
    finally:
        driver.switch_to.default_content()


def test_a_map_laid_out_late_shows_the_city_not_the_world(browser, tmp_path: Path) -> None:
    """Reported: a MapPanel redrew as an empty world map (zero size, zoom 0). That is what
    Leaflet does with a page laid out while its iframe has no size (a hidden output, a
    background tab): fitBounds picks zoom 0 and a later resize keeps it. The same map page
    in a hidden iframe, then shown, must end with the view of a visible one."""
    from fedlab_kit.data import load_districts
    from fedlab_kit.widgets import MapPanel

    frame = MapPanel(districts=load_districts()).map_view.value
    host = tmp_path / "host.html"
    host.write_text(f"<html><body><div id='shown'>{frame}</div>"
                    f"<div id='late' style='display:none'>{frame}</div></body></html>")
    driver = browser
    driver.get(host.as_uri())
    frames = lambda: driver.find_elements("css selector", "iframe.fedlab-map")  # noqa: E731
    _wait(driver, "document.querySelectorAll('iframe.fedlab-map').length === 2", 30, "the maps")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and None in (views := [_leaflet_view(driver, f)
                                                             for f in frames()]):
        time.sleep(0.3)
    shown, hidden = views
    assert shown[0] > 200 and shown[1] > 200 and shown[2] >= 9, shown
    assert hidden[:3] == [0, 0, 0], f"the hidden map was not laid out at zero size: {hidden}"
    driver.execute_script("document.getElementById('late').style.display = 'block';"
                          "document.getElementById('shown').style.display = 'none';")
    deadline = time.monotonic() + 15
    late = _leaflet_view(driver, frames()[1])
    while time.monotonic() < deadline and late[2] != shown[2]:
        time.sleep(0.3)
        late = _leaflet_view(driver, frames()[1])
    assert late[:3] == shown[:3], f"shown late: {late}, shown at once: {shown}"
    assert abs(late[3] - shown[3]) < 1e-3 and abs(late[4] - shown[4]) < 1e-3, (late, shown)


MAP_PANEL_NOTEBOOK = [
    "import h3, pandas as pd\n"
    "from fedlab_kit.data import load_basemap, load_districts\n"
    "from fedlab_kit.widgets import MapPanel\n"
    "ids = [h3.latlng_to_cell(31.23 + i / 200, 121.47, 8) for i in range(5)]\n"
    "cells = pd.DataFrame({'h3': ids, 'count': [50, 80, 30, 12, 60],\n"
    "                      'ci_low': [30, 60, 10, 0, 40], 'ci_high': [70, 100, 50, 30, 80],\n"
    "                      'suppressed': [False] * 5})\n"
    "MapPanel(cells=cells, districts=load_districts(), basemap=load_basemap())",
]


def test_map_panel_toggles_keep_the_city_in_view(lab: str, browser) -> None:
    """Twelve layer toggles clicked in JupyterLab; after each, the map in the iframe has its
    full size, a city-level zoom and the ticked layers' paths (in a tab of its own, in
    front, as an analyst looks at it)."""
    driver = browser
    first = driver.current_window_handle
    driver.switch_to.new_window("tab")
    try:
        # a workspace of its own: the earlier tests' notebooks (one with a MapPanel) would
        # otherwise sit in hidden tabs of the same page, with their own checkboxes and maps
        _open_and_run(driver, lab, "map_panel.ipynb", MAP_PANEL_NOTEBOOK, workspace="maps")
        iframe = ".jp-OutputArea-output iframe.fedlab-map"
        _wait(driver, f"document.querySelector('{iframe}')", 120, "the map panel")
        boxes = ("Crowd counts", "Districts", "Basemap")
        seen = []
        for i in range(12):
            label = boxes[i % len(boxes)]
            box = _wait(driver, "[...document.querySelectorAll('.jp-OutputArea-output "
                                ".widget-checkbox')].find(b => b.textContent.includes("
                                f"{json.dumps(label)}))", 30, f"the {label} checkbox")
            old = driver.find_element("css selector", iframe)
            box.find_element("css selector", "input").click()
            got, deadline = None, time.monotonic() + 20
            while time.monotonic() < deadline:
                frame = driver.find_element("css selector", iframe)
                if frame != old:  # the kernel redrew: a new iframe holds the new page
                    got = _leaflet_view(driver, frame)
                    if got is not None and got[0] > 0:
                        break
                time.sleep(0.3)
            seen.append((label, got))
            assert got is not None, f"toggle {i + 1} ({label}): no redrawn Leaflet map: {seen}"
            width, height, zoom = got[:3]
            assert width > 200 and height > 200 and zoom >= 9, seen
        _shot(driver, "map-panel-toggled")
    finally:
        driver.close()
        driver.switch_to.window(first)
