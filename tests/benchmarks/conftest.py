"""Writes docs/benchmarks.md at the end of a `make bench` session that measured every figure."""

from __future__ import annotations

import time

import pytest

from tests.benchmarks import report

_STARTED = time.monotonic()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not any(s.rows for s in report.SECTIONS.values()):
        return  # no benchmark ran (e.g. `make test`, which loads this conftest too): nothing to say
    if report.complete():
        path = report.write(time.monotonic() - _STARTED)
        print(f"\nbenchmarks written to {path}")
    else:
        missing = [s.title for s in report.SECTIONS.values() if not s.rows]
        print(f"\ndocs/benchmarks.md not rewritten: not measured this time: {'; '.join(missing)}")
