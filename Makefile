# invcap: `make paper` runs the study, `make test` checks it. Both set themselves up.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
KERNEL := invcap
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
# Offline by design: the sentence model ships inside a pip package, nothing is downloaded.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# No MPLBACKEND here: inside a Jupyter kernel (papermill, nbval, JupyterLab) matplotlib must use the
# kernel's inline backend so that figures show and are stored; plain scripts pick Agg headless.
export PYTHONHASHSEED := 0
# Idle OpenMP threads yield instead of spinning: on a shared 2-core machine spinning made
# training steps ~15x slower.
export OMP_WAIT_POLICY := PASSIVE
NB_TIMEOUT ?= 1800

# Stored notebooks keep one progress line per loop; `make lab` keeps live bars.
STORED := INVCAP_PROGRESS=final
# The second numeric path of `make test-portable`: a lower CPU capability and one thread.
PORTABLE := ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 INVCAP_THREADS=1

# generator: trains only what `python -m invcap generate` needs (data, autoencoder, features, the method
# notebook 05 chose on validation, read from results/), a few minutes on 2 cores; caches shared with make paper.
# Notebook 01 is independent of the others; notebooks 02 -> 05 build on each other. `make paper` runs
# them as two chains side by side and `make test` on two workers, one thread each (the CI machine has
# 2 cores), so the committed outputs come from the same thread count as the test's default run.
NB_TOY := $(filter notebooks/01_%,$(NOTEBOOKS))
NB_STUDY := $(filter-out $(NB_TOY),$(NOTEBOOKS))
CHAIN := INVCAP_THREADS=$${INVCAP_THREADS:-1} OMP_NUM_THREADS=$${INVCAP_THREADS:-1}

.PHONY: help setup paper generator paper-toy paper-notebooks test test-portable test-unit-part test-nb01 test-nb02 test-nb03 test-nb04 test-nb05 test-unit test-notebooks test-flickr30k test-flickr30k-part flickr30k bench lab clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-15s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv, install the pinned requirements and invcap (editable), register the Jupyter kernel

# Re-runs only when the pins or the package metadata change.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# --no-compile: byte-compiling every module of torch & co. costs about a minute of set-up; Python
	# compiles what it imports on first use instead.
	$(PY) -m pip install --quiet --no-compile -r requirements.txt
	$(PY) -m pip install --quiet --no-compile --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (invcap)" >/dev/null
	@touch $(STAMP)
	@echo "setup done: $(VENV) with kernel '$(KERNEL)'"

paper: setup ## execute every notebook in order (in place), then the studies that follow them: regenerates figures/, results/ and the README's number blocks
	$(MAKE) --no-print-directory -j2 --output-sync=target paper-toy paper-notebooks
	$(STORED) $(PY) -m invcap.studies.final_table
	$(PY) -m invcap.studies.readme

generator: setup ## train only the text -> image generator, then: python -m invcap generate "a small red circle at the top left"
	$(PY) -m invcap train-generator

paper-toy: setup
	$(CHAIN) $(PY) -m invcap.studies.notebooks run $(NB_TOY)

paper-notebooks: setup
	$(CHAIN) $(PY) -m invcap.studies.notebooks run $(NB_STUDY)

# `make test` schedules its parts on two workers (make -j2, one thread each; CI has 2 cores) by what
# they need: notebook 02 -> 03 -> {04, 05} in that order, the unit tests, notebook 01 and the Flickr30k
# rehearsal beside them. One NBVAL_OUT folder takes every notebook's figures and results.
NBVAL_PARTS := test-nb02 test-nb03 test-nb05 test-nb04 test-unit-part test-nb01 test-flickr30k-part
test: setup ## run pytest on tests/ and nbval on every notebook (two workers side by side)
	@start=$$(date +%s); out=$${NBVAL_OUT:-$$(mktemp -d)}; mkdir -p $$out; echo "nbval artifacts -> $$out"; \
	echo "two workers side by side; each part prints its log when it ends"; \
	$(MAKE) --no-print-directory -j2 --output-sync=target NBVAL_OUT=$$out $(NBVAL_PARTS) && \
	echo "make test: all green in $$(( $$(date +%s) - start )) s"

test-portable: ## `make test` on a second numeric path: CPU capability AVX2, MKL AVX2, 1 thread
	$(PORTABLE) $(MAKE) test

# One nbval run per notebook, in the order the study needs (each reads its predecessors' results).
NB_TESTS := test-nb01 test-nb02 test-nb03 test-nb04 test-nb05
$(NB_TESTS): test-nb%: setup
	$(CHAIN) $(MAKE) --no-print-directory test-notebooks NOTEBOOKS="$(wildcard notebooks/$*_*.ipynb)"
test-nb03: test-nb02
test-nb04: test-nb03
test-nb05: test-nb03

test-unit-part: setup
	$(CHAIN) $(MAKE) --no-print-directory test-unit

test-flickr30k-part: setup
	$(CHAIN) $(MAKE) --no-print-directory test-flickr30k

test-unit: setup
	$(PY) -m pytest -q tests

# nbval re-executes each notebook and compares the cells marked NBVAL_CHECK_OUTPUT. Figures and
# results from this re-run go to a scratch folder (NBVAL_OUT, default a new temporary folder), so the
# committed artifacts stay untouched.
NBVAL_OUT ?=
test-notebooks: setup
	@out=$${NBVAL_OUT:-$$(mktemp -d)}; mkdir -p $$out; echo "nbval artifacts -> $$out"; \
	$(STORED) INVCAP_OUTPUT_DIR=$$out $(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-kernel-name $(KERNEL) \
	  --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout $(NB_TIMEOUT) $(NOTEBOOKS)

# --- Flickr30k (issue 14): the whole study on a Flickr30k folder, nothing committed touched ----------
# Notebooks 02-05 and the post-notebook studies with the parameters of ONE file (PARAMS; sections per
# notebook), DATA_ROOT and DEVICE reaching every notebook. Executed notebooks, figures and results go
# to OUT, caches to OUT/cache; a rerun skips finished stages and resumes from caches and checkpoints.
DATA_ROOT ?=
DEVICE ?= auto
OUT ?= runs/flickr30k
PARAMS ?= params/flickr30k.yaml
STAGES ?=
flickr30k: setup ## the study on Flickr30k: make flickr30k DATA_ROOT=/path/to/flickr30k [DEVICE=cuda] [OUT=runs/flickr30k] [PARAMS=params/flickr30k.yaml]
	@test -n "$(DATA_ROOT)" || { echo "usage: make flickr30k DATA_ROOT=/path/to/flickr30k [DEVICE=cuda] [OUT=runs/flickr30k]" >&2; exit 2; }
	INVCAP_CACHE_DIR=$${INVCAP_CACHE_DIR:-$(abspath $(OUT))/cache} $(PY) -m invcap.studies.flickr30k run --params $(PARAMS) \
	  --set DATA_ROOT=$(abspath $(DATA_ROOT)) --set DEVICE=$(DEVICE) --out $(OUT) $(if $(STAGES),--stages $(STAGES))

# A 300-image rehearsal set (kept in .cache, rebuilt only when its generator changes) through the
# stages of `make flickr30k` at tiny sizes (params/flickr30k-tiny.yaml): image decode, caption encoding,
# notebooks 02-05 (in one runner process: --together saves a start-up per notebook), then a check of
# what it wrote (every notebook executed without an error, every results file with device, data key
# and timings). The post-notebook final table is left out here (it runs in `make flickr30k`). Its own
# caches (OUT/cache) and outputs (a temporary OUT, removed when green): independent of the other chain.
REHEARSAL_300 := .cache/rehearsal-300
TINY_STAGES := images,captions,02_autoencoder,03_captioning,04_inversion_analysis,05_closing_the_inversion_gap
test-flickr30k: setup
	@start=$$(date +%s); \
	$(PY) -m invcap.data.rehearsal $(REHEARSAL_300) --images 300 --workers 1 >/dev/null || \
	  { rm -rf $(REHEARSAL_300) && $(PY) -m invcap.data.rehearsal $(REHEARSAL_300) --images 300 --workers 1; } && \
	out=$$(mktemp -d); echo "flickr30k rehearsal (300 images) -> $$out"; \
	INVCAP_CACHE_DIR=$$out/cache $(PY) -m invcap.studies.flickr30k run --params params/flickr30k-tiny.yaml \
	  --set DATA_ROOT=$(abspath $(REHEARSAL_300)) --set DEVICE=cpu --out $$out --together --stages $(TINY_STAGES) \
	  >$$out/log 2>&1 || { cat $$out/log; exit 1; }; \
	grep -E '^ +[0-9a-z_]+: [0-9]+ s' $$out/log; \
	$(PY) -m invcap.studies.flickr30k check $$out && rm -rf $$out && \
	echo "test-flickr30k: green in $$(( $$(date +%s) - start )) s"

# nflows (the peer in the layer benchmark) goes into a bench-only folder, never into .venv or the
# requirements: only invcap.bench puts that folder on sys.path. Without it the bench says so and runs.
BENCH_DEPS := .bench-deps
bench: setup ## benchmarks: results/bench_inn.json and the README's bench block (nflows installed into .bench-deps/)
	@test -f $(BENCH_DEPS)/nflows/transforms/lu.py || $(PY) -m pip install --quiet --no-deps --target $(BENCH_DEPS) nflows \
	  || echo "nflows could not be installed into $(BENCH_DEPS): the bench runs without its peer"
	$(PY) -m invcap.bench --deps $(BENCH_DEPS) --readme README.md

lab: setup ## JupyterLab on the invcap kernel
	$(VENV)/bin/jupyter lab notebooks

clean: ## remove the environment and caches (keeps committed figures/ and results/)
	rm -rf $(VENV) .cache .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
