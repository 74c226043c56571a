"""Shared pytest fixtures (one re-export line per fixture module), and the order tests are handed out in."""

import pytest

from tests.support.cf_emulator import cf  # noqa: F401
from tests.support.f2b_server import f2b, f2b_pool  # noqa: F401
from tests.support.harness import harness  # noqa: F401
from tests.support.whois_server import whois  # noqa: F401


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked slow first, the rest in their order: pytest-xdist hands tests out in this order, and a
    long test handed out last would run on alone while the other workers have nothing left to do."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
