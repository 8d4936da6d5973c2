# The front door of the study. `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIPELINE ?= notebooks/pipeline.yml
LAB_PORT ?= 8888
# JupyterLab refuses to run as root without --allow-root (root is the usual user in containers, with no browser to open)
LAB_FLAGS := --ip 127.0.0.1 --port $(LAB_PORT) $(if $(filter 0,$(shell id -u)),--allow-root --no-browser,)

.DEFAULT_GOAL := help
.PHONY: help setup data pretrain reports reports-full test test-browser bench lab explore strip clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv and install the study with its dev tools (idempotent)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

data: setup ## generate the embedded synthetic benchmark into data/datasets/synthetic
	$(PY) -m zssbir.cli data generate synthetic

pretrain: setup ## pretrain the small backbone and text tower on the synthetic_pretrain corpus (reopens data/pretrained/ when current)
	$(PY) -m zssbir.training.pretrain

reports: setup ## regenerate every report (notebooks in notebooks/pipeline.yml) into reports/
	$(PY) -m zssbir.cli reports --pipeline $(PIPELINE) --readme

reports-full: setup ## make reports plus the controls beyond its 20 minutes (notebooks/pipeline_full.yml; reuses its runs)
	$(PY) -m zssbir.cli reports --pipeline notebooks/pipeline_full.yml --readme

test: setup ## run every test: unit tests, and the notebook pipeline with tiny parameters in temporary folders
	$(PY) -m pytest -q -m "not browser" tests

test-browser: setup ## the browser tests: report pages and the live explorer in headless Chromium (screenshots in reports/screenshots/)
	$(PY) -m pytest -q -m browser tests

bench: setup ## print speed and memory figures of metrics (and retrieval) against naive baselines, of a backbone step, and images/s of each training stage
	$(PY) bench/bench_metrics.py
	$(PY) bench/bench_clustering.py
	$(PY) bench/bench_backbones.py
	$(PY) bench/bench_cluster_grid.py
	$(PY) bench/bench_training.py

lab: setup ## open the notebooks in JupyterLab (prints the URL to open)
	@echo "JupyterLab: open the http://127.0.0.1:$(LAB_PORT)/lab?token=... URL it prints below (Ctrl-C stops it)"
	$(VENV)/bin/jupyter lab $(LAB_FLAGS) notebooks

explore: setup ## open the retrieval explorer (06_explore) in JupyterLab; run all its cells (needs the runs of make reports)
	@echo "JupyterLab with 06_explore: open the http://127.0.0.1:$(LAB_PORT)/lab/tree/06_explore.ipynb?token=... URL it prints below"
	cd notebooks && $(abspath $(VENV))/bin/jupyter lab $(LAB_FLAGS) 06_explore.ipynb

strip: setup ## strip outputs from the committed notebooks
	$(VENV)/bin/nbstripout notebooks/*.ipynb

clean: ## remove generated reports and caches (keeps .venv and data)
	rm -rf reports/*.html reports/*/ data/cache .pytest_cache
