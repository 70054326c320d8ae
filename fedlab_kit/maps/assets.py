"""Web assets (Leaflet, jQuery, d3) for offline map snapshots, fetched from the npm registry.

folium pages load their JavaScript and CSS from CDNs. An offline snapshot replaces each of
those ``<script src>`` / ``<link href>`` tags by the file's contents, taken from:

* the npm packages pinned in :data:`NPM_PACKAGES` (fetched once with ``npm pack`` into a
  cache directory and checked against the registry's sha512 integrity on every use), and
* folium's own ``leaflet_heat.min.js`` (shipped inside the installed folium wheel; it is the
  file folium's HeatMap links to, with folium's weights patch).

Assets folium references but an offline map does not need (Bootstrap, Font Awesome,
Leaflet.awesome-markers, glyphicons) are dropped; a map that does use awesome markers
(``folium.Icon``) is refused rather than silently broken.

Fetch the assets once per machine (CI does this)::

    python -m fedlab_kit.maps

The cache is ``$FEDLAB_WEB_ASSETS`` if set, else ``$XDG_CACHE_HOME/fedlab-kit/web-assets``
(``~/.cache/fedlab-kit/web-assets``). To prepare a machine without registry access, copy
the ``*.tgz`` files of that directory to it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

from fedlab_kit.maps.errors import MapExportError

ASSETS_ENV = "FEDLAB_WEB_ASSETS"
INSTALL_COMMAND = "python -m fedlab_kit.maps"


@dataclass(frozen=True)
class NpmPackage:
    """A pinned npm package and the sha512 integrity of its registry tarball."""

    name: str
    version: str
    integrity: str  # the registry's `dist.integrity` (Subresource Integrity, sha512)

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def filename(self) -> str:
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


LEAFLET = NpmPackage(
    "leaflet", "1.9.4",
    "sha512-nxS1ynzJOmOlHp+iL3FyWqK89GtNL8U8rvlMOsQdTTssxZwCXh8N2NB3GDQOL+YR3XnWyZAxwQixURb+FA74PA==",
)
JQUERY = NpmPackage(
    "jquery", "3.7.1",
    "sha512-m4avr8yL8kmFN8psrbFFFmB/If14iN5o9nw/NgnnM+kybDJpRsAynV2BsfpTYrTRysYUdADVD7CkUUizgkpLfg==",
)
D3_V3 = NpmPackage(  # branca's colormap legend is written for d3 v3
    "d3", "3.5.17",
    "sha512-yFk/2idb8OHPKkbAL8QaOaqENNoMhIaSHZerk3oQsECwkObkCpJyjYwCe+OHiq6UEdhe1m8ZGARRRO3ljFjlKg==",
)
NPM_PACKAGES: tuple[NpmPackage, ...] = (LEAFLET, JQUERY, D3_V3)


def assets_dir() -> Path:
    """The directory that holds (or will hold) the pinned npm tarballs."""
    explicit = os.environ.get(ASSETS_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fedlab-kit" / "web-assets"


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def _missing_message(pkgs: Sequence[NpmPackage], where: Path, why: str) -> str:
    names = ", ".join(p.spec for p in pkgs)
    return (f"offline map assets {why}: {names} in {where}. Fetch them once with "
            f"`{INSTALL_COMMAND}` (needs npm and the npm registry), or set {ASSETS_ENV} to a "
            "directory holding those npm tarballs")


def missing_assets(cache_dir: Path | str | None = None) -> list[NpmPackage]:
    """The pinned packages whose tarball is absent from, or corrupt in, the cache."""
    where = Path(cache_dir) if cache_dir is not None else assets_dir()
    missing = []
    for pkg in NPM_PACKAGES:
        path = where / pkg.filename
        if not path.is_file() or _integrity(path.read_bytes()) != pkg.integrity:
            missing.append(pkg)
    return missing


def _npm_pack(npm: str, pkg: NpmPackage, dest: Path, timeout: float) -> Path:
    env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false",
           "npm_config_audit": "false", "npm_config_loglevel": "error"}
    cmd = [npm, "pack", pkg.spec, "--json", "--ignore-scripts", "--pack-destination", str(dest)]
    try:
        proc = subprocess.run(cmd, cwd=dest, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise MapExportError(f"`npm pack {pkg.spec}` did not finish within {timeout:.0f} s; "
                             "is the npm registry reachable?") from exc
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise MapExportError(f"`npm pack {pkg.spec}` failed (exit {proc.returncode}):\n{tail}")
    try:
        filename = json.loads(proc.stdout)[0]["filename"]
    except (ValueError, LookupError, TypeError):
        found = sorted(dest.glob("*.tgz"))
        if len(found) != 1:
            raise MapExportError(f"`npm pack {pkg.spec}` wrote no tarball to {dest}") from None
        return found[0]
    return dest / Path(filename).name


def ensure_assets(cache_dir: Path | str | None = None, *, npm: str | None = None,
                  timeout: float = 300.0) -> Path:
    """Make sure every pinned npm tarball is in the cache; fetch the missing ones.

    Each tarball is fetched with ``npm pack NAME@VERSION`` (no install scripts run) and
    kept only if its sha512 matches the pinned registry integrity. Returns the cache
    directory. Raises :class:`MapExportError` when npm is missing or a fetch fails.
    """
    where = Path(cache_dir) if cache_dir is not None else assets_dir()
    todo = missing_assets(where)
    if not todo:
        return where
    npm_exe = shutil.which(npm or "npm")
    if npm_exe is None:
        raise MapExportError(
            _missing_message(todo, where, "are missing and npm is not installed")
            + " (install Node.js and npm, e.g. `apt-get install -y npm`)")
    where.mkdir(parents=True, exist_ok=True)
    for pkg in todo:
        with tempfile.TemporaryDirectory(dir=where, prefix=".fetch-") as tmp:
            tarball = _npm_pack(npm_exe, pkg, Path(tmp), timeout)
            got = _integrity(tarball.read_bytes())
            if got != pkg.integrity:
                raise MapExportError(f"npm tarball of {pkg.spec} has integrity {got}, expected "
                                     f"the pinned {pkg.integrity}; refusing to use it")
            os.replace(tarball, where / pkg.filename)
    return where


class _Assets:
    """Reads members of the verified tarballs (each tarball read and checked once)."""

    def __init__(self, cache_dir: Path | str | None) -> None:
        self.where = Path(cache_dir) if cache_dir is not None else assets_dir()
        missing = missing_assets(self.where)
        if missing:
            raise MapExportError(_missing_message(missing, self.where, "are not available"))
        self._members: dict[NpmPackage, dict[str, bytes]] = {}

    def read(self, pkg: NpmPackage, member: str) -> bytes:
        if pkg not in self._members:
            data = (self.where / pkg.filename).read_bytes()
            if _integrity(data) != pkg.integrity:  # changed since the check in __init__
                raise MapExportError(_missing_message([pkg], self.where, "are corrupt"))
            members: dict[str, bytes] = {}
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                for info in tar.getmembers():
                    extracted = tar.extractfile(info) if info.isfile() else None
                    if extracted is not None:
                        members[info.name.split("/", 1)[-1]] = extracted.read()
            self._members[pkg] = members
        try:
            return self._members[pkg][member]
        except KeyError:
            raise MapExportError(f"{pkg.spec} has no file {member!r}") from None

    def text(self, pkg: NpmPackage, member: str) -> str:
        return self.read(pkg, member).decode("utf-8")


def _png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


_SOURCE_MAP = re.compile(r"^\s*(?://|/\*)#\s*sourceMappingURL=.*$", re.MULTILINE)


def _leaflet_js(assets: _Assets) -> str:
    js = _SOURCE_MAP.sub("", assets.text(LEAFLET, "dist/leaflet.js"))
    icons = {key: _png_data_uri(assets.read(LEAFLET, f"dist/images/{file}"))
             for key, file in (("iconUrl", "marker-icon.png"),
                               ("iconRetinaUrl", "marker-icon-2x.png"),
                               ("shadowUrl", "marker-shadow.png"))}
    # Leaflet finds its default marker images relative to leaflet.css; inlined, they are
    # data URIs, so point the default icon at them directly.
    fix = ("\n;(function(){var D=L.Icon.Default;D.imagePath='';"
           f"D.mergeOptions({json.dumps(icons)});}})();\n")
    return js + fix


def _leaflet_css(assets: _Assets) -> str:
    css = _SOURCE_MAP.sub("", assets.text(LEAFLET, "dist/leaflet.css"))

    def data_uri(match: re.Match[str]) -> str:
        return f"url({_png_data_uri(assets.read(LEAFLET, 'dist/images/' + match.group(1)))})"

    css = re.sub(r"url\(\s*['\"]?images/([\w.-]+\.png)['\"]?\s*\)", data_uri, css)
    leftover = [u for u in re.findall(r"url\(\s*['\"]?([^'\")]+)", css)
                if not u.startswith(("data:", "#"))]
    if leftover:
        raise MapExportError(f"leaflet.css references files that cannot be inlined: {leftover}")
    return css


def _folium_heat_js(_: _Assets) -> str:
    path = resources.files("folium") / "templates" / "leaflet_heat.min.js"
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MapExportError("the installed folium has no templates/leaflet_heat.min.js; "
                             "reinstall folium (pip install 'folium>=0.17')") from exc


@dataclass(frozen=True)
class _Rule:
    label: str
    pattern: re.Pattern[str]
    load: Callable[[_Assets], str] | None  # None: not needed offline, dropped
    markers_only: bool = False  # needed by folium.Icon (awesome markers): refuse, not drop


def _rx(pattern: str) -> re.Pattern[str]:
    # Versions are matched by major: a folium that moves to Leaflet 2 or jQuery 4 gets a
    # "cannot inline" error rather than a silently mismatched library.
    return re.compile(pattern + r"(?:[?#].*)?$", re.IGNORECASE)


_RULES: tuple[_Rule, ...] = (
    _Rule("leaflet.js (npm leaflet@1.9.4)", _rx(r"/leaflet(?:@1\.[^/]*)?/dist/leaflet\.js"),
          _leaflet_js),
    _Rule("leaflet.css (npm leaflet@1.9.4)", _rx(r"/leaflet(?:@1\.[^/]*)?/dist/leaflet\.css"),
          _leaflet_css),
    _Rule("jquery.min.js (npm jquery@3.7.1)",
          _rx(r"/jquery(?:-3\.[\w.]*?|@3\.[^/]*/dist/jquery)(?:\.min)?\.js"),
          lambda a: a.text(JQUERY, "dist/jquery.min.js")),
    _Rule("d3.min.js (npm d3@3.5.17)", _rx(r"/d3(?:/|@)3\.[\d.]+/d3(?:\.min)?\.js"),
          lambda a: a.text(D3_V3, "d3.min.js")),
    _Rule("leaflet_heat.min.js (folium package)", _rx(r"/leaflet[_-]heat(?:\.min)?\.js"),
          _folium_heat_js),
    _Rule("bootstrap", _rx(r"/bootstrap(?:@[^/]*)?/dist/(?:js|css)/bootstrap[\w.]*\.(?:js|css)"),
          None),
    _Rule("glyphicons", _rx(r"/bootstrap-glyphicons(?:\.min)?\.css"), None, markers_only=True),
    _Rule("awesome markers", _rx(r"/leaflet\.awesome[-.][\w.-]*\.(?:js|css)"), None,
          markers_only=True),
    _Rule("font awesome", _rx(r"/fontawesome[\w-]*(?:@[^/]*)?/css/[\w.]+\.css"), None,
          markers_only=True),
)


def _is_remote(url: str) -> bool:
    return url.strip().lower().startswith(("http://", "https://", "//"))


@dataclass(frozen=True)
class _Tag:
    start: int
    end: int
    tag: str
    url: str


class _TagScanner(HTMLParser):
    """Finds ``<script src>`` and ``<link href>`` tags with their offsets in the text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.text = text
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.tags: list[_Tag] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k.lower(): (v or "") for k, v in attrs}
        line, col = self.getpos()
        start = self.line_starts[line - 1] + col
        raw = self.get_starttag_text() or ""
        end = start + len(raw)
        if tag == "script" and "src" in values:
            close = re.compile(r"</script\s*>", re.IGNORECASE).search(self.text, end)
            if close is not None and not self.text[end:close.start()].strip():
                end = close.end()
            self.tags.append(_Tag(start, end, "script", values["src"]))
        elif tag == "link" and "href" in values:
            self.tags.append(_Tag(start, end, "link", values["href"]))


def _scan(html: str) -> list[_Tag]:
    scanner = _TagScanner(html)
    scanner.feed(html)
    scanner.close()
    return scanner.tags


def remote_asset_refs(html: str) -> list[str]:
    """URLs of every ``<script src>`` / ``<link href>`` in ``html`` that needs the network."""
    return [t.url for t in _scan(html) if _is_remote(t.url)]


def _script(label: str, js: str) -> str:
    js = re.sub(r"</(script)", r"<\\/\1", js, flags=re.IGNORECASE).replace("<!--", "<\\!--")
    return f"<script>/* inlined for offline use: {label} */\n{js}\n</script>"


def _style(label: str, css: str) -> str:
    css = re.sub(r"</(style)", r"<\\/\1", css, flags=re.IGNORECASE)
    return f"<style>/* inlined for offline use: {label} */\n{css}\n</style>"


def inline_assets(html: str, cache_dir: Path | str | None = None) -> str:
    """Return ``html`` with every CDN script/stylesheet replaced by its inlined contents.

    Raises :class:`MapExportError` if the assets are not in the cache (naming the command
    that fetches them), if the page uses awesome markers, or if it references a remote
    script or stylesheet this module does not know.
    """
    tags = _scan(html)
    remote = [t for t in tags if _is_remote(t.url)]
    if not remote:
        return html
    uses_markers = "L.AwesomeMarkers" in html
    plan: list[tuple[_Tag, _Rule]] = []
    unknown: list[str] = []
    for tag in remote:
        rule = next((r for r in _RULES if r.pattern.search(tag.url)), None)
        if rule is None:
            unknown.append(tag.url)
        elif rule.markers_only and uses_markers:
            raise MapExportError("this map uses folium.Icon (Leaflet.awesome-markers with icon "
                                 "fonts), which offline snapshots do not bundle; use "
                                 "folium.CircleMarker or folium.DivIcon instead")
        else:
            plan.append((tag, rule))
    if unknown:
        raise MapExportError("offline snapshot cannot inline these remote assets (no bundled "
                             f"copy): {unknown}; remove the plugin that adds them")
    assets = _Assets(cache_dir) if any(rule.load for _, rule in plan) else None
    edits: list[tuple[_Tag, str]] = []
    seen: set[str] = set()
    for tag, rule in sorted(plan, key=lambda p: p[0].start):
        replacement = ""
        if rule.load is not None and assets is not None and rule.label not in seen:
            seen.add(rule.label)  # a second reference to the same asset is just dropped
            content = rule.load(assets)
            replacement = (_script if tag.tag == "script" else _style)(rule.label, content)
        edits.append((tag, replacement))
    out = html
    for tag, replacement in reversed(edits):
        out = out[:tag.start] + replacement + out[tag.end:]
    left = remote_asset_refs(out)
    if left:  # defensive: every remote tag was planned above
        raise MapExportError(f"offline snapshot still references remote assets: {left}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fedlab_kit.maps [DIR]``: fetch the pinned web assets."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        where = ensure_assets(args[0] if args else None)
    except MapExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for pkg in NPM_PACKAGES:
        print(f"{pkg.spec:<16} {where / pkg.filename}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
