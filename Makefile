# fedlab-kit: every target sets itself up on a fresh machine (creates .venv, installs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
RELAY_PORT ?= 8765
# JupyterLab refuses to run as root unless told so (containers, CI machines)
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root --no-browser,)

.PHONY: setup system-deps demo test lint lab bench clean maps-assets

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "fedlab-kit needs Python >= 3.10"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,dask]'
	rm -f $(VENV)/.installed-* && touch $@

# JupyterLab settings of this venv (no "Jupyter news?" toast); Binder's postBuild does the same
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json
$(LAB_OVERRIDES): binder/overrides.json $(STAMP)
	mkdir -p $(dir $@) && cp binder/overrides.json $@

# Chromium (PNG map snapshots, browser tests) and npm (the offline map assets): installed
# with apt-get when missing and this user may (root on Debian/Ubuntu); otherwise a note
# says what to install (HTML export and everything else work without them)
APT_INSTALL = DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
system-deps:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	    || [ -n "$$FEDLAB_CHROMIUM" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Chromium (apt-get)"; apt-get update -qq && $(APT_INSTALL) chromium; \
	else echo "note: no Chromium and no way to install it here: PNG map export and its tests" \
	  "need it (apt-get install chromium, or set FEDLAB_CHROMIUM=/path/to/chromium)"; fi
	@if command -v chromedriver >/dev/null 2>&1 || [ -n "$$FEDLAB_CHROMEDRIVER" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium-driver (apt-get)"; apt-get update -qq && \
	  $(APT_INSTALL) chromium-driver; \
	else echo "note: no chromedriver: the JupyterLab browser tests need it" \
	  "(apt-get install chromium-driver, or set FEDLAB_CHROMEDRIVER)"; fi
	@if command -v caddy >/dev/null 2>&1 || [ -n "$$FEDLAB_CADDY" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing caddy (apt-get)"; apt-get update -qq && $(APT_INSTALL) caddy; \
	else echo "note: no caddy: the test of the relay behind the shipped reverse-proxy" \
	  "config needs it (apt-get install caddy, or set FEDLAB_CADDY)"; fi
	@if command -v npm >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing npm (apt-get)"; apt-get update -qq && $(APT_INSTALL) nodejs npm; \
	else echo "note: no npm: offline map assets need it once (python -m fedlab_kit.maps)"; fi

demo: $(STAMP) $(LAB_OVERRIDES) system-deps  ## headless end-to-end run on the shipped sample; writes out/
	-$(BIN)/python -m fedlab_kit.maps
	$(BIN)/fedlab demo --out out

test: $(STAMP) $(LAB_OVERRIDES) system-deps  ## lint + the whole test suite (unit and end-to-end)
	$(BIN)/ruff check fedlab_kit tests datasets
	$(BIN)/python -m fedlab_kit.maps
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check fedlab_kit tests datasets

lab: $(STAMP) $(LAB_OVERRIDES)  ## a local relay plus JupyterLab on notebooks/
	$(BIN)/fedlab relay --port $(RELAY_PORT) & relay=$$!; \
	trap "kill $$relay" EXIT INT TERM; \
	$(BIN)/jupyter lab $(LAB_ARGS) notebooks/

bench: $(STAMP)
	$(BIN)/fedlab bench relay --mb 500 --json out/bench_relay.json
	$(BIN)/fedlab bench dp --persons 100000 --json out/bench_dp.json

maps-assets: $(STAMP)  ## fetch Leaflet & co. from npm once, for offline map snapshots
	$(BIN)/python -m fedlab_kit.maps

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
