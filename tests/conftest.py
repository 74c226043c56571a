"""Shared pytest fixtures (one re-export line per fixture module), how tests are handed out, and
Hypothesis' settings."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings

from tests.support.cf_emulator import cf  # noqa: F401
from tests.support.f2b_server import f2b, f2b_pool  # noqa: F401
from tests.support.harness import harness  # noqa: F401
from tests.support.whois_server import whois  # noqa: F401

# Hypothesis' default deadline (200 ms an example) fails a test for the machine's speed, not for a wrong
# answer: a loaded 2-core machine misses it. Time is what the benchmarks measure, not the tests.
settings.register_profile("reconcile", deadline=None)
settings.load_profile("reconcile")

# Modules whose tests share an expensive module-scoped fixture (an installed root, a built wheel): under
# pytest-xdist all of a module's tests go to one worker, so that the fixture is made once, not once per
# worker. (xdist's own `--dist loadgroup` does not group with pytest 9.2: pytest-xdist issue #1386.)
ONE_WORKER = ("tests/e2e/test_deploy.py", "tests/e2e/test_packaging.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked slow first, the rest in their order: pytest-xdist hands tests out in this order, and a
    long test handed out last would run on alone while the other workers have nothing left to do."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


class _Scheduling:
    """Each test its own unit of work, except the ONE_WORKER modules, one unit each (handed out first)."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        from xdist.scheduler import LoadScopeScheduling

        class Scheduling(LoadScopeScheduling):  # type: ignore[misc]  # xdist ships no type hints
            def _split_scope(self, nodeid: str) -> str:
                module = nodeid.split("::", 1)[0]
                return module if module.endswith(ONE_WORKER) else nodeid

        return Scheduling(config, log)


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_Scheduling(), "reconcile-scheduling")
