# Both public targets set up .venv on their own; the stamp makes a second run skip the install.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The TF1 Object Detection API and slim, for the reference tests only (tests/reference): a folder
# of its own, put on the path of the reference subprocess alone, never of the product.
REFERENCE := $(VENV)/reference
REFERENCE_STAMP := $(REFERENCE)/.installed-stamp
REFERENCE_PACKAGES := tf-object-detection-api==0.1 tf-slim==1.1.0 tf-keras==2.21.0 \
	scipy==1.17.1 contextlib2==21.6.0
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

# --no-deps: the OD API's own requirements (TF1-era pins) would replace this project's TensorFlow.
$(REFERENCE_STAMP): Makefile | $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-deps --upgrade --target $(REFERENCE) $(REFERENCE_PACKAGES)
	touch $(REFERENCE_STAMP)

test: $(STAMP) $(REFERENCE_STAMP)
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
