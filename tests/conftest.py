"""Shared pytest fixtures (one re-export line per fixture module) and Hypothesis' settings."""

from hypothesis import settings

from tests.support.cf_emulator import cf  # noqa: F401
from tests.support.f2b_server import f2b, f2b_pool  # noqa: F401
from tests.support.harness import harness  # noqa: F401
from tests.support.whois_server import whois  # noqa: F401

# Hypothesis' default deadline (200 ms an example) fails a test for the machine's speed, not for a wrong
# answer: a loaded 2-core machine misses it. Time is what the benchmarks measure, not the tests.
settings.register_profile("reconcile", deadline=None)
settings.load_profile("reconcile")
