"""The cyclic garbage collector paused around the big pure passes (reading and planning 100,000 bans)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused (and resumed after, if it ran before).

    Reading and planning 100,000 bans allocates several objects per ban, none in a reference cycle; the
    collector, triggered every 700 allocations, re-scans them all (40 % of planning, 10 % of the read).
    Reference counting still frees everything meanwhile.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
