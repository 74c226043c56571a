# `make demo` shows the job working; `make test` runs every test. Both set themselves up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint demo bench system-deps venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

system-deps:
	sh tests/install-system-deps.sh

test: system-deps $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check reconcile tests
	$(BIN)/ruff format --check reconcile tests
	$(BIN)/mypy

bench: system-deps $(STAMP)
	$(BIN)/pytest -q -s tests/benchmarks

demo: system-deps $(STAMP)
	$(BIN)/python tests/demo.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
