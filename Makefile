# `make demo` shows the job working; `make test` runs every test. Both set themselves up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test test-unit test-e2e lint demo bench system-deps venv clean install-system

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

system-deps:
	sh tests/support/install-system-deps.sh

# Several pytest-xdist workers (more than cores: most e2e time is waiting on servers and subprocesses);
# tests/conftest.py decides which tests share a worker.
WORKERS ?= 4
XDIST   := -n $(WORKERS)

test: system-deps $(STAMP)
	$(BIN)/pytest -q $(XDIST) tests/unit tests/e2e

# Seconds: no server, no socket, no subprocess (tests/unit/conftest.py refuses them).
test-unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

test-e2e: system-deps $(STAMP)
	$(BIN)/pytest -q $(XDIST) tests/e2e

lint: $(STAMP)
	$(BIN)/ruff check reconcile tests
	$(BIN)/ruff format --check reconcile tests
	$(BIN)/mypy

bench: system-deps $(STAMP)
	$(BIN)/pytest -q -s -o python_files="bench_*.py" tests/benchmarks

demo: system-deps $(STAMP)
	$(BIN)/python -m tests.support.demo

# As root: the package in /opt/reconcile, systemd units, fail2ban actions, the example config (cron/install.sh).
install-system:
	sh cron/install.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
