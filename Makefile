# `make demo` shows the job working; `make test` runs every test. Both set themselves up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test test-unit test-e2e test-unit-debian test-deb deb lint demo bench system-deps venv clean install-system

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

# The unit tests on Debian 12's python3 with Debian's own packages of the runtime libraries, at the versions
# debian/control depends on and pyproject.toml's lower bounds name (tests/debian/libraries.txt): a venv
# that sees the system's site-packages, with only the test tools added; check_libraries.py makes sure.
DEBIAN_VENV  := .venv-debian
DEBIAN_STAMP := $(DEBIAN_VENV)/.installed
DEBIAN_LIBS  := python3-requests python3-dateutil python3-tabulate python3-prometheus-client python3-venv

$(DEBIAN_STAMP): tests/debian/libraries.txt pyproject.toml
	sh tests/debian/needs.sh $(DEBIAN_LIBS)
	rm -rf $(DEBIAN_VENV)
	/usr/bin/python3 -m venv --system-site-packages $(DEBIAN_VENV)
	$(DEBIAN_VENV)/bin/pip install -q --disable-pip-version-check -c tests/debian/libraries.txt \
	    pytest pytest-timeout pytest-xdist hypothesis openapi-core pyyaml
	touch $(DEBIAN_STAMP)

test-unit-debian: $(DEBIAN_STAMP)
	$(DEBIAN_VENV)/bin/python tests/debian/check_libraries.py
	PYTHONPATH=. $(DEBIAN_VENV)/bin/pytest -q -p no:cacheprovider tests/unit

# The Debian package in dist/ (debian/, Debian's tools, lintian: no error, no warning).
deb:
	sh tests/debian/build.sh

# As root, with Debian's mirrors reachable: the package installed on a fresh Debian 12 root with fail2ban,
# checked, run against the emulator and purged (tests/debian/test_install.py). About 2-3 minutes with the
# build, so not part of `make test`; CI runs it (.ci/run).
test-deb: deb system-deps $(STAMP)
	sh tests/debian/needs.sh mmdebstrap
	$(BIN)/pytest -s -v -p no:cacheprovider tests/debian/test_install.py

lint: $(STAMP)
	$(BIN)/ruff check reconcile tests
	$(BIN)/ruff format --check reconcile tests
	$(BIN)/mypy

bench: system-deps $(STAMP)
	$(BIN)/pytest -q -s -o python_files="bench_*.py" --durations=12 tests/benchmarks

demo: system-deps $(STAMP)
	$(BIN)/python -m tests.support.demo

# As root: the package in /opt/reconcile, systemd units, fail2ban actions, the example config (cron/install.sh).
install-system:
	sh cron/install.sh

clean:
	rm -rf $(VENV) $(DEBIAN_VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
