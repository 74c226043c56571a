"""Shared pytest fixtures (one re-export line per fixture module), and how tests are handed out."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import settings

from tests.support.cf_emulator import cf  # noqa: F401
from tests.support.f2b_server import f2b, f2b_pool  # noqa: F401
from tests.support.harness import harness  # noqa: F401
from tests.support.whois_server import whois  # noqa: F401

# Hypothesis: the same examples on every run (derandomize, no example database), so that CI cannot fail on
# one found by chance; no deadline, since how long an example takes is the machine's business (a unit
# test once took 268 ms against the 200 ms default on a loaded machine). HYPOTHESIS_PROFILE=explore draws
# new examples, for looking for bugs rather than for a verdict.
settings.register_profile("deterministic", derandomize=True, database=None, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

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
