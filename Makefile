# One command for the main job, one for the tests; each sets up what it needs.
#   make run    # the pipeline on data/sample (LocalDagRunner, DirectRunner, SQLite MLMD)
#   make test   # the test suite
#   make bench  # the benchmarks -> BENCHMARKS.md (QUICK=1: a short smoke run)
# The virtual environment lives outside the clone, keyed on a hash of the
# lock file, so clones and CI runs share it: $(VENV).

SHELL := /bin/bash
PY310 := $(shell scripts/find-python310)
LOCK_HASH := $(shell cat requirements/lock.txt | sha256sum | cut -c1-16)
VENV_ROOT ?= $(HOME)/.cache/tfx-stateful-sequences
VENV ?= $(VENV_ROOT)/venv-py310-$(LOCK_HASH)
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OUTPUT ?= outputs/local
RUN_ARGS ?=
PYTEST_ARGS ?=
# The suite runs in this many processes (pytest-xdist; 1: in this process).
# Each test module stays on one worker (tests/conftest.py).
TEST_WORKERS ?= 2
# Benchmarks run by `make bench`, in order (BENCH="padding evaluation" picks).
BENCH ?= padding dense_step_rate batcher_throughput training_speed memory_vs_length evaluation real_data pipeline_overhead streams distributed truncation step_profile tagging_lag main_job_profile recipe feature_pass
# real_data reads the UCR/UEA .ts files shipped in the aeon wheel (data only,
# requirements/bench.txt), installed without dependencies into this folder
# (not into the venv, which stays exactly requirements/lock.txt).
BENCH_DATA ?= $(VENV_ROOT)/bench-data
QUICK ?=
export PYTHONPATH := $(CURDIR)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv run test bench lock clean-outputs

venv: $(STAMP)

$(STAMP):
	@test -n "$(PY310)" || { echo "Python 3.10 is required (TFX 1.16)"; exit 1; }
	@echo "Setting up $(VENV) (first time: about 4 minutes, 3.3 GB)"
	rm -rf $(VENV)
	$(PY310) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade "pip==26.3" "setuptools==84.2.1" "wheel==0.48.0"
	$(PYTHON) -m pip install --quiet --no-deps -r requirements/lock.txt
	$(PYTHON) -m pip check
	touch $(STAMP)

# The main job: the pipeline on the bundled sample with the embedded defaults
# (exactly the README's command; RUN_ARGS adds flags).
run: venv
	$(PYTHON) -m pipeline.local_runner --data-root data/sample --output-dir $(OUTPUT) $(RUN_ARGS)

test: venv
	$(PYTHON) -m pytest tests $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile,) $(PYTEST_ARGS)

# The benchmarks of issue 6: each script rewrites its own section of
# BENCHMARKS.md. QUICK=1 shrinks the sizes and writes to a scratch file.
bench: venv $(if $(filter real_data streams tagging_lag recipe,$(BENCH)),$(BENCH_DATA)/.installed,) $(if $(filter recipe,$(BENCH)),$(BENCH_DATA)-sktime/.installed,)
	@set -e; for b in $(BENCH); do \
	  echo "== benchmarks.$$b"; \
	  TSS_AEON_DATA=$(BENCH_DATA) TSS_SKTIME_DATA=$(BENCH_DATA)-sktime/sktime/datasets/data $(PYTHON) -m benchmarks.$$b $(if $(QUICK),--quick,); \
	done

$(BENCH_DATA)-sktime/.installed: requirements/bench-sktime.txt | $(STAMP)
	rm -rf $(BENCH_DATA)-sktime
	$(PYTHON) -m pip install --quiet --no-deps --ignore-requires-python --target $(BENCH_DATA)-sktime -r requirements/bench-sktime.txt
	touch $@

$(BENCH_DATA)/.installed: requirements/bench.txt | $(STAMP)
	rm -rf $(BENCH_DATA)
	$(PYTHON) -m pip install --quiet --no-deps --ignore-requires-python --target $(BENCH_DATA) -r requirements/bench.txt
	touch $@

# Resolve the direct dependencies and pin every version (then commit it).
# The current lock is a constraint, so adding a dependency to base.in pins
# only what it brings and leaves every existing pin as it is; UPGRADE=1
# re-resolves everything from scratch (newest versions that fit).
UPGRADE ?=
lock:
	rm -rf /tmp/tss-lock-venv && $(PY310) -m venv /tmp/tss-lock-venv
	/tmp/tss-lock-venv/bin/pip install --quiet --upgrade pip setuptools wheel
	/tmp/tss-lock-venv/bin/pip install --quiet -r requirements/base.in $(if $(UPGRADE),,-c requirements/lock.txt)
	# PYTHONPATH emptied: with the repository on it, freeze would list this
	# project itself (from a leftover tfx_stateful_sequences.egg-info).
	PYTHONPATH= /tmp/tss-lock-venv/bin/pip freeze --all | grep -v '^\(pip\|setuptools\|wheel\)==' > requirements/lock.txt

clean-outputs:
	rm -rf outputs
