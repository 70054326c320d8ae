# fedlab-kit: every target sets itself up on a fresh machine (creates .venv, installs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
RELAY_PORT ?= 8765
# JupyterLab refuses to run as root unless told so (containers, CI machines)
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root --no-browser,)

.PHONY: setup demo test lint lab bench clean maps-assets

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "fedlab-kit needs Python >= 3.10"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)  ## headless end-to-end run on the shipped sample; writes out/
	-$(BIN)/python -m fedlab_kit.maps
	$(BIN)/fedlab demo --out out

test: $(STAMP)  ## lint + the whole test suite (unit and end-to-end)
	$(BIN)/ruff check fedlab_kit tests datasets
	$(BIN)/python -m fedlab_kit.maps
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check fedlab_kit tests datasets

lab: $(STAMP)  ## a local relay plus JupyterLab on notebooks/
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
