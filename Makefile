# Both public targets set up .venv on their own; the stamp makes a second run skip the install.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
WORKERS ?= 2
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: demo test lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m ondevice_vision.demo --workdir=workdir/demo

test: $(STAMP)
	$(BIN)/ruff check ondevice_vision tests benchmarks
	$(BIN)/ruff format --check ondevice_vision tests benchmarks
	$(BIN)/python -m pytest -n $(WORKERS) --durations=15 tests

lint: $(STAMP)
	$(BIN)/ruff check ondevice_vision tests benchmarks
	$(BIN)/ruff format --check ondevice_vision tests benchmarks

format: $(STAMP)
	$(BIN)/ruff check --fix ondevice_vision tests benchmarks
	$(BIN)/ruff format ondevice_vision tests benchmarks

clean:
	rm -rf $(VENV) workdir .pytest_cache
