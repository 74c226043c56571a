"""Shared pytest fixtures: one re-export line per fixture module."""

from tests.cf_emulator import cf  # noqa: F401
from tests.f2b_server import f2b  # noqa: F401
from tests.harness import harness  # noqa: F401
from tests.whois_server import whois  # noqa: F401
