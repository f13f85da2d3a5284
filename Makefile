# `make run` and `make test` install whatever is missing first, then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
FASHION_DIR := /usr/share/datasets/fashion-mnist
ARGS ?=
# Budget of `make reproduce-<name>`: quick (minutes, checks the pipeline) or paper.
budget ?= quick

.PHONY: install data run test test-slow test-all test-gpu lint bench sync reports clean

install: $(STAMP) data

# Re-installs when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# Full Fashion-MNIST for offline runs, from Debian's dataset-fashion-mnist.
# Best effort: without root or apt the rest still installs and the tests use
# data they generate.
data:
	@if [ ! -d $(FASHION_DIR) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
	      || echo "warning: could not install dataset-fashion-mnist; data=fashion_mnist needs data.download=true"; \
	  else echo "note: $(FASHION_DIR) missing (needs root: apt-get install dataset-fashion-mnist)"; fi; \
	fi

run: install
	$(BIN)/python run.py $(ARGS)

# The default tier on TEST_WORKERS pytest-xdist workers (one torch thread each, tests/conftest.py).
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) $(ARGS)

# The slow tier alone: subprocess runs of run.py, multiruns, W&B, kill-and-resume.
test-slow: install
	$(BIN)/python -m pytest -q -m "slow and not gpu" $(ARGS)

# Both tiers (GPU tests skip themselves without a CUDA device).
test-all: install
	$(BIN)/python -m pytest -q -m "" $(ARGS)

# Every experiment for one batch on a CUDA device (skipped where there is none).
test-gpu: install
	$(BIN)/python -m pytest -q -m gpu tests/test_gpu.py $(ARGS)

lint: install
	$(BIN)/ruff check src tests experiments run.py

bench: install
	$(BIN)/python experiments/bench_spiral.py $(ARGS)

# Upload runs that W&B logged offline (needs `wandb login` and the network);
# runs already uploaded are skipped. `make sync ARGS=--dry-run` only lists them.
sync: install
	find logs -type d -name 'offline-run-*' -prune -print0 | xargs -0 -r $(BIN)/wandb sync --skip-synced $(ARGS)

# One command per paper result: run its sweep, write experiments/reports/<name>_<budget>.md.
reproduce-%: install
	$(BIN)/python experiments/reproduce.py $* --budget $(budget) $(ARGS)

# Re-render every committed report and claims.json from its records, then SCORECARD.md.
reports: install
	$(BIN)/python -m odelab.reports.scorecard --rerender

clean:
	rm -rf logs .pytest_cache
