# One command sets up and runs the main job (make demo); one runs the tests (make test).
SHELL := /bin/bash
PY_SYS ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CURATE := $(VENV)/bin/curate
# torch/torchvision pinned to the builds that lie on this machine kind's disk (CUDA builds, fine on CPU)
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
MANIFEST ?= $(shell ls -td manifests/*/ 2>/dev/null | head -n 1)
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: setup system demo test test-fast lint bench shards gpu-check clean

$(VENV)/.installed: pyproject.toml
	@bash scripts/setup-system.sh
	$(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed  ## create .venv with curate and its dependencies

system:  ## system packages (WordNet 3.0 from Debian)
	@bash scripts/setup-system.sh

demo: setup  ## build the default controlled dataset from the embedded demo corpus
	$(CURATE) run pipelines/demo.yaml

test: setup  ## run the test suite
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check curate tests benchmarks

bench: setup  ## benchmarks: side by side in one run, printed as ratios
	@set -e; for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b; done

shards: setup  ## images + tensor shards for the newest manifest (or MANIFEST=manifests/NAME)
	@test -n "$(MANIFEST)" || { echo "no manifest under manifests/: run 'make demo' first" >&2; exit 2; }
	$(CURATE) shards $(MANIFEST)

gpu-check: setup  ## the GPU validation script (one H200, < 10 min)
	bash scripts/gpu-check.sh

clean:
	rm -rf .pytest_cache .ruff_cache
