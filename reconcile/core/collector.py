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
        # What the pass allocated goes straight to the oldest generation, unscanned: re-enabled as it
        # was, the collector's next allocation found hundreds of thousands of young objects pending and
        # scanned them all, then again as middle-aged (0.2 s after planning 100,000 bans, the writes'
        # sort paying for it). freeze() moves every tracked object to the permanent generation and zeroes
        # the young count; unfreeze() puts them all into the oldest generation, still collectable there.
        # Nothing in this program freezes objects on purpose (no fork after start-up).
        gc.freeze()
        gc.unfreeze()
        if enabled:
            gc.enable()
