"""How fast and how much a run may talk to Cloudflare: request spacing, a request budget, a deadline.

Cloudflare allows 1,200 requests per 5 minutes per token, shared with every other user of the token, and
blocks the token for 5 minutes when that is exceeded (DESIGN §6). So every HTTP attempt, retries and list
pages included, first asks the run's Pacer. No HTTP here; clock and sleep are injected for tests.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from reconcile.errors import BudgetExhausted

# Enough doublings to reach any sane cap; keeps base * 2**attempt from overflowing a float.
_MAX_DOUBLINGS = 64


class Pacer:
    """Spaces request starts at least 60/requests_per_minute s apart and stops the run at its limits.

    The deadline is `max_seconds` after the Pacer was created. A request may start only before the deadline;
    when the wait needed for spacing would take it past the deadline, the run stops now instead of sleeping.
    """

    def __init__(
        self,
        requests_per_minute: float,
        max_requests: int,
        max_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not requests_per_minute > 0:
            raise ValueError(f"requests_per_minute must be > 0, not {requests_per_minute!r}")
        if max_requests < 0:
            raise ValueError(f"max_requests must be >= 0, not {max_requests!r}")
        if not max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0, not {max_seconds!r}")
        self.requests_per_minute = float(requests_per_minute)
        self.max_requests = max_requests
        self.max_seconds = float(max_seconds)
        self.interval = 60.0 / self.requests_per_minute
        self.requests = 0
        self._clock = clock
        self._sleep = sleep
        self._started = clock()
        self._first: float | None = None
        self._last: float | None = None

    def acquire(self, what: str) -> None:
        """Wait until the next request may start, then count it; BudgetExhausted if it may not."""
        if self.requests >= self.max_requests:
            raise BudgetExhausted(f"request budget of {self.max_requests} used up (next was {what})")
        now = self._clock()
        wait = 0.0 if self._last is None else max(0.0, self._last + self.interval - now)
        deadline = self._started + self.max_seconds
        if now + wait >= deadline:
            raise BudgetExhausted(
                f"time limit of {self.max_seconds:g} s for this run reached (next was {what})"
            )
        if wait > 0:
            self._sleep(wait)
        # Never earlier than planned, so a sleep that returns early cannot squeeze requests together.
        start = max(self._clock(), now + wait)
        if self._first is None:
            self._first = start
        self._last = start
        self.requests += 1

    def remaining(self) -> float:
        """Seconds left before the run's time limit (never negative)."""
        return max(0.0, self._started + self.max_seconds - self._clock())

    def elapsed(self) -> float:
        """Seconds since the Pacer was created (the run's clock)."""
        return self._clock() - self._started

    def rate_per_minute(self) -> float:
        """Achieved rate of request starts, first to last (0.0 with fewer than two requests).

        Measured between starts, like the spacing itself, so it is comparable with requests_per_minute.
        """
        if self._first is None or self._last is None or self.requests < 2 or self._last <= self._first:
            return 0.0
        return (self.requests - 1) * 60.0 / (self._last - self._first)


def backoff(
    attempt: int, base: float = 0.5, cap: float = 8.0, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to sleep before retry number `attempt` (0 for the first retry): exponential, full jitter.

    Uniform in [0, min(cap, base * 2**attempt)), so clients that failed together do not retry together.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, not {attempt}")
    ceiling = min(cap, base * 2.0 ** min(attempt, _MAX_DOUBLINGS))
    return max(0.0, ceiling * rand())
