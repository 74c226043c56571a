"""Writes docs/benchmarks.md at the end of a `make bench` session that measured every figure."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.benchmarks import fleet_background, report
from tests.support.cf_emulator import CloudflareEmulator
from tests.support.f2b_server import F2B
from tests.support.harness import Harness, make_harness

_STARTED = time.monotonic()


# trylast: after -k and -m have deselected, so a run of one figure does not start the fleet's 15 minutes.
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """With the fleet figure selected: start its simulation now, in the background, and collect it last."""
    fleet = [item for item in items if item.nodeid.endswith("bench_fleet.py::test_fleet")]
    if fleet:
        items[:] = [item for item in items if item not in fleet] + fleet
        fleet_background.start()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not any(s.rows for s in report.SECTIONS.values()):
        return  # no benchmark ran (e.g. `make test`, which loads this conftest too): nothing to say
    if report.complete():
        path = report.write(time.monotonic() - _STARTED)
        print(f"\nbenchmarks written to {path}")
    else:
        missing = [s.title for s in report.SECTIONS.values() if not s.rows]
        print(f"\ndocs/benchmarks.md not rewritten: not measured this time: {'; '.join(missing)}")


@pytest.fixture
def harness_of(tmp_path: Path) -> Iterator[Callable[[F2B, CloudflareEmulator], Harness]]:
    """make_harness for a fail2ban and an emulator started inside the test (and its token check)."""
    made: list[Iterator[Harness]] = []

    def make(f2b: F2B, cf: CloudflareEmulator) -> Harness:
        gen = make_harness(f2b, cf, tmp_path / f"h{len(made)}")
        (tmp_path / f"h{len(made)}").mkdir()
        made.append(gen)
        return next(gen)

    yield make
    for gen in made:
        for _ in gen:  # runs make_harness's checks after its yield
            pass
