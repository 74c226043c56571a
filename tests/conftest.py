"""Shared pytest fixtures: one re-export line per fixture module."""

from tests.support.cf_emulator import cf  # noqa: F401
from tests.support.f2b_server import f2b, f2b_pool  # noqa: F401
from tests.support.harness import harness  # noqa: F401
from tests.support.whois_server import whois  # noqa: F401
