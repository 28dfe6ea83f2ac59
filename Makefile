# Two commands do everything on a fresh clone: `make run` and `make test`.
# Each creates .venv and installs the project on first use.

SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test test-fast lint compile bench clean constraints help cluster cluster-down images

help:
	@echo "make run        set up, then the live continuous-training demo (ctpipe demo)"
	@echo "make test       set up, then lint, type-check and run the whole test suite"
	@echo "make test-fast  unit and component tests only (no pipeline runs)"
	@echo "make compile    regenerate pipelines/compiled/*.yaml (CPU and GPU profiles)"
	@echo "make bench      run the benchmarks in bench/"
	@echo "make images     build the images (docker if an engine answers, else podman)"
	@echo "make cluster    a kind cluster with KFP, KServe and ctpipe (needs kind, docker, skaffold, helm)"
	@echo "make cluster-down  delete that cluster"

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip check
	@touch $@

run: $(STAMP)
	$(BIN)/ctpipe demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(STAMP) lint
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not pipeline and not services and not container and not cluster"

compile: $(STAMP)
	$(BIN)/python -m ctpipe.pipelines.compile

# docker when an engine answers, else podman (a local base-image stand-in when no registry
# is in reach); the GPU trainer only where nvidia-smi answers (GPU=yes forces it).
images: $(STAMP)
	$(BIN)/python scripts/images.py

# Opt-in: builds images and starts a cluster (minutes); `make cluster-down` removes it.
cluster: $(STAMP)
	scripts/cluster-up.sh

cluster-down:
	scripts/cluster-down.sh

bench: $(STAMP)
	$(BIN)/python bench/pipeline_overhead.py
	$(BIN)/python bench/drift_check.py
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/train_torch.py
	$(BIN)/python bench/containers.py
	$(BIN)/python bench/ct_policies.py
	$(BIN)/python bench/monitor_volume.py

# Re-pin every dependency after changing pyproject.toml (needs a working .venv).
constraints: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//' \
	  | cat <(sed -n '1,2p' constraints.txt) - > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .ctpipe .pytest_cache .mypy_cache .ruff_cache
