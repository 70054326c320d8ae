"""Export a folium map as one self-contained HTML file or as a PNG (headless Chromium, or
matplotlib where there is no browser).

* ``snapshot(m, "map.html")`` writes a single file that renders with no network: every CDN
  ``<script src>`` / ``<link href>`` folium emits is replaced by the inlined file, taken from
  the pinned npm packages (see :mod:`fedlab_kit.maps.assets`; fetch them once with
  ``python -m fedlab_kit.maps``).
* ``snapshot(m, "map.png")`` renders that same offline page in headless Chromium (found on
  PATH, or ``$FEDLAB_CHROMIUM``). By default the browser gets no network at all (all
  traffic goes to a dead local proxy), so the picture shows exactly what the file holds;
  ``allow_network=True`` lets tiles load on an online machine. With no Chromium, the PNG is
  drawn with matplotlib instead (:mod:`fedlab_kit.maps.static`: same layers, colours,
  legends and title; no tiles); ``renderer="browser"`` or ``"static"`` picks one.
"""

from __future__ import annotations

import contextlib
import html
import os
import shutil
import signal
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

from fedlab_kit.errors import InputError, InputTypeError
from fedlab_kit.maps.assets import inline_assets
from fedlab_kit.maps.errors import MapExportError

BROWSER_ENV = "FEDLAB_CHROMIUM"
BROWSER_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
                      "chrome")
INSTALL_BROWSER_HINT = ("install Chromium (Debian/Ubuntu: `apt-get install -y chromium`) or set "
                        f"{BROWSER_ENV}=/path/to/chromium")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_NO_NETWORK = ("--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>")


RENDERERS = ("auto", "browser", "static")


def find_browser(browser: str | None = None) -> str:
    """Path of a headless-capable Chromium: ``browser``, ``$FEDLAB_CHROMIUM`` or on PATH.

    Raises :class:`MapExportError` saying how to install one when there is none.
    """
    explicit = browser or os.environ.get(BROWSER_ENV)
    if explicit:
        found = shutil.which(explicit)
        if found is None:
            source = "browser=" if browser else f"${BROWSER_ENV}="
            raise MapExportError(f"PNG export: the browser {source}{explicit!r} was not found "
                                 f"or is not executable; {INSTALL_BROWSER_HINT}")
        return found
    for name in BROWSER_CANDIDATES:
        found = shutil.which(name)
        if found is not None:
            return found
    raise MapExportError("PNG export needs a headless Chromium and none was found on PATH "
                         f"(looked for {', '.join(BROWSER_CANDIDATES)}); {INSTALL_BROWSER_HINT}. "
                         "HTML export (snapshot(m, 'map.html')) needs no browser.")


def offline_html(m: Any, *, assets_dir: Path | str | None = None) -> str:
    """The map's full HTML page with every CDN script and stylesheet inlined."""
    root = m.get_root() if hasattr(m, "get_root") else None
    if root is None or not hasattr(root, "render"):
        raise InputTypeError(f"snapshot expects a folium map, got {type(m).__name__}")
    return inline_assets(root.render(), assets_dir)


def iframe_html(page: str, height: int = 450) -> str:
    """An ``<iframe>`` showing the whole HTML ``page`` (for notebooks and widgets)."""
    return (f'<iframe class="fedlab-map" srcdoc="{html.escape(page, quote=True)}" '
            f'style="width:100%;box-sizing:border-box;display:block;height:{int(height)}px;'
            'border:1px solid #ddd" '
            'sandbox="allow-scripts allow-popups"></iframe>')


def notebook_html(m: Any, height: int = 450) -> str | None:
    """How a map shows itself in a notebook: its page with Leaflet & co. inlined, so it
    draws with no network; ``None`` when that cannot be done (offline assets not fetched,
    or a plugin without a bundled copy), for the caller to fall back to the CDN page."""
    try:
        return iframe_html(offline_html(m), height)
    except MapExportError:
        return None


def browser_command(browser: str, url: str, *, user_data_dir: Path | str,
                    screenshot: Path | str | None = None, dump_dom: bool = False,
                    width: int = 1200, height: int = 800, virtual_time_ms: int = 5000,
                    allow_network: bool = False) -> list[str]:
    """The headless Chromium command line used for exports (for screenshots or DOM dumps)."""
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", "--no-default-browser-check", "--disable-dev-shm-usage",
           "--hide-scrollbars", "--force-device-scale-factor=1", "--mute-audio",
           f"--user-data-dir={user_data_dir}", f"--window-size={width},{height}",
           f"--virtual-time-budget={virtual_time_ms}"]
    if not allow_network:
        cmd.extend(_NO_NETWORK)
    if screenshot is not None:
        cmd.append(f"--screenshot={screenshot}")
    if dump_dom:
        cmd.append("--dump-dom")
    cmd.append(url)
    return cmd


def run_browser(cmd: list[str], *, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a browser command in its own process group; kill that group on a time-out."""
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    except OSError as exc:
        raise MapExportError(f"could not start the browser {cmd[0]!r}: {exc}; "
                             f"{INSTALL_BROWSER_HINT}") from exc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise MapExportError(f"headless Chromium did not finish within {timeout:.0f} s") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _png_size(data: bytes) -> tuple[int, int]:
    if not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise MapExportError("headless Chromium did not write a valid PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _write_png(html: str, path: Path, *, browser: str, width: int, height: int,
               virtual_time_ms: int, allow_network: bool, timeout: float) -> None:
    with tempfile.TemporaryDirectory(prefix="fedlab-map-") as tmp:
        page = Path(tmp) / "map.html"
        page.write_text(html, encoding="utf-8")
        shot = Path(tmp) / "map.png"
        cmd = browser_command(browser, page.as_uri(), user_data_dir=Path(tmp) / "profile",
                              screenshot=shot, width=width, height=height,
                              virtual_time_ms=virtual_time_ms, allow_network=allow_network)
        result = run_browser(cmd, timeout=timeout)
        if not shot.is_file() or shot.stat().st_size == 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-10:])
            raise MapExportError(f"headless Chromium wrote no screenshot "
                                 f"(exit {result.returncode}):\n{tail}")
        data = shot.read_bytes()
        size = _png_size(data)
        if size != (width, height):
            raise MapExportError(f"headless Chromium wrote a {size[0]}x{size[1]} PNG, "
                                 f"expected {width}x{height}")
        path.write_bytes(data)


def snapshot(m: Any, path: Path | str, *, width: int = 1200, height: int = 800,
             browser: str | None = None, allow_network: bool = False,
             virtual_time_ms: int = 5000, timeout: float = 90.0,
             assets_dir: Path | str | None = None, title: str | None = None,
             renderer: str = "auto") -> Path:
    """Write map ``m`` to ``path``: ``.html`` (self-contained, offline) or ``.png``.

    ``title`` is the page's ``<title>`` (default: the first layer's name or caption).
    ``renderer`` (PNG only): ``"browser"`` (headless Chromium), ``"static"`` (matplotlib,
    no browser) or ``"auto"``: the browser when there is one, else static with a warning.

    Raises :class:`MapExportError` with what to install or run when the web assets or the
    browser are missing, or when the browser fails; an
    :class:`~fedlab_kit.errors.InputError` for a path that is not ``.html``/``.png``, a
    size that is not positive or ``m`` that is not a folium map. Returns ``path``.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".html", ".htm", ".png"):
        raise InputError(f"snapshot writes .html or .png files, not {target.name!r}")
    if renderer not in RENDERERS:
        raise InputError(f"renderer must be one of {', '.join(RENDERERS)}, got {renderer!r}")
    exe = None
    if suffix == ".png":
        if width < 1 or height < 1:
            raise InputError(f"PNG size must be positive, got {width}x{height}")
        explicit = browser or os.environ.get(BROWSER_ENV)  # named: it must work
        if renderer == "browser" or (renderer == "auto" and explicit):
            exe = find_browser(browser)  # before the work, so a missing browser fails fast
        elif renderer == "auto":
            with contextlib.suppress(MapExportError):
                exe = find_browser()
        if renderer == "auto" and exe is None:
            warnings.warn("no headless Chromium here: the PNG is drawn with matplotlib "
                          f"(no tiles); {INSTALL_BROWSER_HINT} for the browser's picture",
                          stacklevel=2)
    if title is not None and hasattr(m, "get_root"):
        from .layers import set_title

        set_title(m, title, replace=True)
    if suffix == ".png" and exe is None:
        from .static import static_png

        target.parent.mkdir(parents=True, exist_ok=True)
        return static_png(m, target, width=width, height=height)
    html = offline_html(m, assets_dir=assets_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        _write_png(html, target, browser=exe, width=width, height=height,
                   virtual_time_ms=virtual_time_ms, allow_network=allow_network,
                   timeout=timeout)
    else:
        target.write_text(html, encoding="utf-8")
    return target
