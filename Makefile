# The front door of the study. `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIPELINE ?= notebooks/pipeline.yml

.DEFAULT_GOAL := help
.PHONY: help setup data pretrain reports test test-fast bench lab strip clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv and install the study with its dev tools (idempotent)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

data: setup ## generate the embedded synthetic benchmark into data/datasets/synthetic
	$(PY) -m zssbir.cli data generate synthetic

pretrain: setup ## pretrain the small backbone on the synthetic_pretrain corpus (cached by content; not used by the reports)
	$(PY) -m zssbir.training.pretrain

reports: setup ## regenerate every report (notebooks in notebooks/pipeline.yml) into reports/
	$(PY) -m zssbir.cli reports --pipeline $(PIPELINE) --readme

test: setup ## run every test: unit tests, and the notebook pipeline with tiny parameters in temporary folders
	$(PY) -m pytest -q tests

bench: setup ## print speed and memory figures of metrics (and retrieval) against naive baselines, of a backbone step, and images/s of each training stage
	$(PY) bench/bench_metrics.py
	$(PY) bench/bench_clustering.py
	$(PY) bench/bench_backbones.py
	$(PY) bench/bench_training.py

lab: setup ## open the notebooks in JupyterLab
	$(VENV)/bin/jupyter lab notebooks

strip: setup ## strip outputs from the committed notebooks
	$(VENV)/bin/nbstripout notebooks/*.ipynb

clean: ## remove generated reports and caches (keeps .venv and data)
	rm -rf reports/*.html reports/*/ data/cache .pytest_cache
