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
# torch + torchvision for benchmarks/side_by_side.py only: a folder of their own, put on the path of
# the benchmark's torchvision subprocess alone, never a dependency of the product. TORCH_INDEX may
# name PyTorch's CPU-only wheel index (pytorch.org's install page) where it is reachable; empty:
# the default index (PyPI).
TORCHVISION := $(VENV)/torchvision
TORCHVISION_STAMP := $(TORCHVISION)/.installed-stamp
TORCHVISION_PACKAGES := torch==2.14.1 torchvision==0.29.1
TORCH_INDEX ?=
WORKERS ?= 2
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: demo test lint format clean bench-torchvision

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

$(TORCHVISION_STAMP): Makefile | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade --target $(TORCHVISION) \
		$(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCHVISION_PACKAGES)
	touch $(TORCHVISION_STAMP)

# Ours against torchvision's SSDLite320 / LR-ASPP, alternating rounds (JSON; docs/speed.md).
bench-torchvision: $(STAMP) $(TORCHVISION_STAMP)
	$(BIN)/python benchmarks/side_by_side.py --torch_path=$(TORCHVISION)

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
