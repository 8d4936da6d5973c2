# The front door of the study. `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIPELINE ?= notebooks/pipeline.yml
LAB_PORT ?= 8888
# the teaching notebooks committed WITH their outputs (fast and deterministic; their metadata says keep_output):
# make test re-runs them and compares every text output with nbval, make outputs refreshes them (style.md, 14-15)
NBVAL_NOTEBOOKS := notebooks/07_methods_in_2d.ipynb
NBVAL := CUDA_VISIBLE_DEVICES= ZSSBIR_DEVICE=cpu MPLBACKEND=module://matplotlib_inline.backend_inline \
	$(PY) -m pytest -q -p no:cacheprovider --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg
# JupyterLab refuses to run as root without --allow-root (root is the usual user in containers, with no browser to open)
LAB_FLAGS := --ip 127.0.0.1 --port $(LAB_PORT) $(if $(filter 0,$(shell id -u)),--allow-root --no-browser,)

.DEFAULT_GOAL := help
.PHONY: help setup data pretrain reports reports-full test test-browser outputs bench bench-gpu lab explore strip clean

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

pretrain: setup ## pretrain the small backbone and text tower on each miniature's corpus (synthetic_pretrain, synthetic_pretrain_hard; reopens data/pretrained/ when current)
	$(PY) -m zssbir.training.pretrain
	$(PY) -m zssbir.training.pretrain --corpus synthetic_pretrain_hard

reports: setup ## regenerate every report (notebooks in notebooks/pipeline.yml) into reports/
	$(PY) -m zssbir.cli reports --pipeline $(PIPELINE) --readme

reports-full: setup ## make reports plus the controls beyond its 20 minutes (notebooks/pipeline_full.yml; reuses its runs)
	$(PY) -m zssbir.cli reports --pipeline notebooks/pipeline_full.yml --readme

test: setup ## run every test: unit tests, the notebook pipeline with tiny parameters in temporary folders, and nbval on the notebooks kept with outputs
	$(PY) -m pytest -q -m "not browser" tests
	$(NBVAL) $(NBVAL_NOTEBOOKS)

outputs: setup ## re-execute the notebooks kept with outputs (NBVAL_NOTEBOOKS) in place, then check them with nbval: commit the result
	PATH="$(abspath $(VENV))/bin:$$PATH" CUDA_VISIBLE_DEVICES= ZSSBIR_DEVICE=cpu \
		MPLBACKEND=module://matplotlib_inline.backend_inline $(VENV)/bin/jupyter nbconvert --to notebook \
		--execute --inplace --ExecutePreprocessor.record_timing=False --ExecutePreprocessor.kernel_name=python3 \
		$(NBVAL_NOTEBOOKS)
	$(NBVAL) $(NBVAL_NOTEBOOKS)

test-browser: setup ## the browser tests: report pages and the live explorer in headless Chromium (screenshots in reports/screenshots/)
	$(PY) -m pytest -q -m browser tests

bench: setup ## print speed and memory figures of metrics (and retrieval) against naive baselines, of a backbone step, images/s of each training stage, and k-means beside busy processes
	$(PY) bench/bench_metrics.py
	$(PY) bench/bench_clustering.py
	$(PY) bench/bench_backbones.py
	$(PY) bench/bench_cluster_grid.py
	$(PY) bench/bench_training.py
	$(PY) bench/bench_contention.py

bench-gpu: setup ## on a GPU, every configs/clusterretri and configs/dmwa file: images/s of two training epochs, of a step alone and of extraction, peak memory, scoring time and the estimated epoch and run on the real benchmark (a tiny form on a CPU)
	$(PY) bench/bench_gpu.py

lab: setup ## open the notebooks in JupyterLab (prints the URL to open)
	@echo "JupyterLab: open the http://127.0.0.1:$(LAB_PORT)/lab?token=... URL it prints below (Ctrl-C stops it)"
	$(VENV)/bin/jupyter lab $(LAB_FLAGS) notebooks

explore: setup ## open the retrieval explorer (06_explore) in JupyterLab; run all its cells (needs the runs of make reports)
	@echo "JupyterLab with 06_explore: open the http://127.0.0.1:$(LAB_PORT)/lab/tree/06_explore.ipynb?token=... URL it prints below"
	cd notebooks && $(abspath $(VENV))/bin/jupyter lab $(LAB_FLAGS) 06_explore.ipynb

strip: setup ## strip outputs from the committed notebooks (not from NBVAL_NOTEBOOKS: make outputs refreshes those)
	$(VENV)/bin/nbstripout $(filter-out $(NBVAL_NOTEBOOKS),$(wildcard notebooks/*.ipynb))

clean: ## remove generated reports and caches (keeps .venv and data)
	rm -rf reports/*.html reports/*/ data/cache .pytest_cache
