"""How fast and how much a run may talk to Cloudflare: request spacing, the account's quota, a request
budget, a deadline (DESIGN §6, §12).

Cloudflare allows 1,200 requests per 5 minutes per *user*, counted across every token, key and the
dashboard, and blocks every call for 5 minutes when that is exceeded. Every answer says what is left
(`Ratelimit: "default";r=…;t=…`); the transport hands it to `Pacer.observe`. So every HTTP attempt, retries
and list pages included, first asks the run's Pacer, which:
- spaces requests at `requests_per_minute`, a ceiling on the sustained rate; while the quota is plentiful a
  burst of up to BURST requests goes at once (a token bucket refilled at that rate), so a kicked run's
  listing does not crawl. Without quota headers it spaces strictly, as before they were read;
- never lets the quota's remaining `r` fall below the reserve: `quota_reserve` of `q`, plus what the others
  of the account will spend until the reset (their observed rate, never above the window's own pace so
  far, times `t`). At the reserve
  it waits for the reset if that comes within the run's time limit, else stops the run (QuotaSpent, exit 4).

No HTTP and no hidden clock here: `clock` and `sleep` are passed in (a fleet simulation drives simulated
time through them).
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from reconcile.cloudflare.answers import Quota
from reconcile.cloudflare.paging import PAGES_AT_ONCE
from reconcile.errors import BudgetExhausted

# Enough doublings to reach any sane cap; keeps base * 2**attempt from overflowing a float.
_MAX_DOUBLINGS = 64
# Requests that may go at once while the quota is plentiful: a 10-page listing of 10,000 rules and its
# writes (issue 18's latency target) without waiting on the spacing.
BURST = 20
# ...but never more than this many seconds of the sustained rate: an operator who sets 1 request a minute
# means it (at the default 200 a minute, 6 s is the whole burst of 20).
BURST_SECONDS = 6.0
# "Plentiful": the headroom above the reserve holds this many whole bursts.
PLENTY_BURSTS = 2
DEFAULT_RESERVE = 0.1
# Seconds of watching (or of a window) that tell a pace from a burst (see Pacer.others_rate).
RATE_SPAN = 30.0
# The most requests of one run in flight at once: a listing's pages. Answers to requests in flight together
# may be counted by the server in another order than they started: `r` may rise by up to this much between
# two answers without the window having reset.
IN_FLIGHT = PAGES_AT_ONCE


class QuotaSpent(BudgetExhausted):
    """The account's quota is down to the reserve and does not reset within the run's time limit."""


@dataclass(frozen=True)
class Seen:
    """The last quota an answer stated, when (on the pacer's clock), and after how many of our requests."""

    quota: Quota
    at: float
    ours: int
    alone: bool = True  # no other request of ours was in flight: the server's count holds exactly `ours`


class Pacer:
    """Spaces request starts, keeps the account's quota above the reserve, stops the run at its limits.

    The deadline is `max_seconds` after the Pacer was created. A request may start only before the deadline;
    when the wait it needs would take it past the deadline, the run stops now instead of sleeping.
    """

    def __init__(
        self,
        requests_per_minute: float,
        max_requests: int,
        max_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        *,
        quota_reserve: float = DEFAULT_RESERVE,
        burst: int = BURST,
    ) -> None:
        if not requests_per_minute > 0:
            raise ValueError(f"requests_per_minute must be > 0, not {requests_per_minute!r}")
        if max_requests < 0:
            raise ValueError(f"max_requests must be >= 0, not {max_requests!r}")
        if not max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0, not {max_seconds!r}")
        if not 0 <= quota_reserve <= 1:
            raise ValueError(f"quota_reserve must be between 0 and 1, not {quota_reserve!r}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, not {burst!r}")
        self.requests_per_minute = float(requests_per_minute)
        self.max_requests = max_requests
        self.max_seconds = float(max_seconds)
        self.interval = 60.0 / self.requests_per_minute
        self.quota_reserve = quota_reserve
        self.burst = max(1, min(burst, int(self.requests_per_minute * BURST_SECONDS / 60)))
        self.requests = 0
        self.clock = clock
        self.sleep = sleep
        self._started = clock()
        self._first: float | None = None
        self._last: float | None = None
        self._tokens = float(self.burst)  # the bucket starts full: nothing was spent yet
        self.seen: Seen | None = None  # the last quota an answer stated
        self._first_seen: Seen | None = None
        # What the others of the account spent between two of our answers in one window, and over how long.
        self.others_spent = 0
        self._others_span = 0.0
        self._window_ours = 0  # our requests counted before the current window began
        self.waited_for_reset = 0.0
        # Several threads (a listing's pages) start requests and observe answers: one at a time here. acquire
        # sleeps the spacing holding it (the next start waits for the one before it), a reset without it.
        self._lock = threading.Lock()
        self._outstanding: set[int] = set()  # requests started and not yet answered (or given up on)
        self._overlapped: set[int] = set()  # of those, the ones that were in flight together with another

    # --- the quota ---

    def observe(self, quota: Quota | None, ours: int | None = None) -> None:
        """An answer arrived (with what it said of the quota, or None): the transport calls this each time.

        `ours` is the number acquire gave its request (None: the last one started). Of answers to requests
        in flight together only the newest counts: an older one arriving later says less of the quota."""
        with self._lock:
            number = self.requests if ours is None else ours
            alone = number not in self._overlapped
            self._settle(number)
            if quota is not None:
                self._observe(quota, number, alone)

    def finished(self, ours: int) -> None:
        """Request `ours` ended without an answer (a timeout, a reset): it is no longer in flight."""
        with self._lock:
            self._settle(ours)

    def _settle(self, ours: int) -> None:
        self._outstanding.discard(ours)
        self._overlapped.discard(ours)

    def _observe(self, quota: Quota, ours: int, alone: bool) -> None:
        last = self.seen
        if last is not None and ours < last.ours:
            return
        now = self.clock()
        seen = Seen(quota, now, ours, alone)
        if last is not None and not _reset_between(last, seen):
            if alone and last.alone:
                # Only between answers to requests sent one at a time does the server's count say exactly
                # what the others spent: with several in flight it may count them in another order.
                self.others_spent += max(0, last.quota.remaining - quota.remaining - (ours - last.ours))
                self._others_span += max(0.0, now - last.at)
        elif last is not None:
            self._window_ours = last.ours
        self.seen = seen
        if self._first_seen is None:
            self._first_seen = seen

    @property
    def quota(self) -> Quota | None:
        """The last quota an answer stated (for metrics and --check)."""
        return None if self.seen is None else self.seen.quota

    def others_rate(self) -> float:
        """Requests per second the others of the account spend, as observed between our answers.

        Only what this run watched counts: the window's pace before it began (q - r at its first answer)
        would count this host's own earlier runs as others and stall every run that follows a busy one."""
        watched = self.others_spent / self._others_span if self._others_span > 0 else 0.0
        if self._others_span >= RATE_SPAN:
            return watched  # long enough to tell a pace from a burst, and to see one that has just begun
        # What they spent during a short watch may be a burst (another host's listing in the same second)
        # they do not keep up: taken as the pace until a reset minutes away, it reserved the whole quota,
        # and ten hosts stopped each other's runs at a third of it (issue 18's fleet). No sustained pace
        # exceeds the window's own so far, so until the watch is long enough the smaller of the two is it.
        pace = self._window_pace()
        return watched if pace is None else min(watched, pace)

    def _window_pace(self) -> float | None:
        """Requests per second the window has been spent at by all but this run; None without the policy's
        window to count from, or in its first RATE_SPAN seconds (a few seconds say little of a pace)."""
        seen = self.seen
        if seen is None or seen.quota.limit is None or seen.quota.window is None:
            return None
        elapsed = seen.quota.window - seen.quota.reset
        if elapsed < RATE_SPAN:
            return None
        spent = seen.quota.limit - seen.quota.remaining - (seen.ours - self._window_ours)
        return max(0, spent) / elapsed

    def limit(self) -> int | None:
        """The quota per window: as the policy states it, else the most ever seen left."""
        seen = self.seen
        if seen is None:
            return None
        if seen.quota.limit is not None:
            return seen.quota.limit
        first = self._first_seen or seen
        return max(seen.quota.remaining, first.quota.remaining)

    def reset_in(self, now: float) -> float:
        """Seconds until the stated window resets, counted from `now` (0 once passed)."""
        if self.seen is None:
            return 0.0
        return max(0.0, self.seen.at + self.seen.quota.reset - now)

    def reserve(self, now: float) -> float:
        """The requests the run leaves: `quota_reserve` of the quota, and on top of it what the others
        will spend until the reset at the pace they spend now.

        On top, not the larger of the two: with the larger, a neighbour's need until the reset was left
        to the request, and the jitter of its pace or of our estimate ran it into 429s (1 e2e run in 3);
        the share stays a margin for whoever else comes (a person in the dashboard)."""
        limit = self.limit() or 0
        wanted = self.quota_reserve * limit + self.others_rate() * self.reset_in(now)
        # A rate guessed from a few milliseconds can be absurd; the whole quota is the most to keep.
        return min(wanted, limit) if limit else wanted

    def left(self, now: float) -> float:
        """What is left of the quota now, as best known: the last `r`, less what this run and the others
        spent since; the whole quota again once the window has reset. math.inf when no answer said."""
        seen = self.seen
        if seen is None:
            return math.inf
        if now >= seen.at + seen.quota.reset:
            return float(self.limit() or seen.quota.remaining)
        ours = self.requests - seen.ours
        return seen.quota.remaining - ours - self.others_rate() * (now - seen.at)

    def plentiful(self, now: float) -> bool:
        """Whether a burst may go: a known quota with room for whole bursts above the reserve. Answers
        without quota headers never allow one (strict spacing, as before they were read)."""
        if self.seen is None:
            return False
        return self.left(now) - self.reserve(now) >= PLENTY_BURSTS * self.burst

    def plentiful_now(self) -> bool:
        """plentiful() at the pacer's clock, for a caller in another thread than the requests."""
        with self._lock:
            return self.plentiful(self.clock())

    # --- one request ---

    def acquire(self, what: str) -> int:
        """Wait until the next request may start, then count it and return its number (1 for the run's first);
        BudgetExhausted if it may not."""
        reset_at: float | None = None
        while True:
            with self._lock:
                number, reset_at, pause = self._acquire(what, reset_at)
            if number:
                return number
            # At the reserve: the wait for the reset is slept without the lock, so that the answers of the
            # other requests in flight (a listing's pages) are read meanwhile and a 429 among them is seen.
            self.sleep(pause)

    def _acquire(self, what: str, reset_at: float | None) -> tuple[int, float | None, float]:
        """(the request's number, None, 0) once it may start; at the reserve (0, when the window resets,
        seconds to sleep until then). `reset_at`: the reset just waited for (the window has reset: the
        reserve is not asked again)."""
        if self.requests >= self.max_requests:
            raise BudgetExhausted(f"request budget of {self.max_requests} used up (next was {what})")
        now = self.clock()
        deadline = self._started + self.max_seconds
        if reset_at is not None:
            now = max(now, reset_at)
        elif self.left(now) - 1 < self.reserve(now):
            reset_at = self._reset_at(now, deadline, what)
            self.waited_for_reset += reset_at - now
            return 0, reset_at, reset_at - now
        self._refill(now)
        wait = 0.0
        if not (self.plentiful(now) and self._tokens >= 1):
            spacing = 0.0 if self._last is None else max(0.0, self._last + self.interval - now)
            refill = max(0.0, (1 - self._tokens) * self.interval)
            wait = max(spacing, refill)
        if now + wait >= deadline:
            raise BudgetExhausted(
                f"time limit of {self.max_seconds:g} s for this run reached (next was {what})"
            )
        if wait > 0:  # the spacing: slept holding the lock, so that the next start waits for this one
            self.sleep(wait)
        # Never earlier than planned, so a sleep that returns early cannot squeeze requests together.
        start = max(self.clock(), now + wait)
        self._refill(start)
        self._tokens = max(0.0, self._tokens - 1)
        if self._first is None:
            self._first = start
        self._last = start
        self.requests += 1
        if self._outstanding:  # the server may count these in another order than they started
            self._overlapped.update(self._outstanding, (self.requests,))
        self._outstanding.add(self.requests)
        return self.requests, None, 0.0

    def _refill(self, now: float) -> None:
        since = now - (self._last if self._last is not None else self._started)
        self._tokens = min(float(self.burst), self._tokens + max(0.0, since) / self.interval)

    def _reset_at(self, now: float, deadline: float, what: str) -> float:
        """At the reserve: when the window resets, if that is within the time limit; else stop the run."""
        reset_at = now + self.reset_in(now)
        if reset_at < deadline:
            return reset_at
        raise QuotaSpent(self.spent_message(now, what))

    def spent_message(self, now: float, what: str) -> str:
        """Why the run stops at the reserve: what is left, the reserve, and who spent the quota."""
        limit, first = self.limit(), self._first_seen
        before = ""
        if first is not None and limit is not None:
            before = f" and {max(0, limit - first.quota.remaining - first.ours)} before it"
        return (
            f"the account's API quota is spent down to the reserve: about {max(0, int(self.left(now)))}"
            f" of {limit} requests left, reserve {math.ceil(self.reserve(now))}; other users of the account"
            f" spent {self.others_spent} during this run{before} (this run: {self.requests}); it resets in"
            f" {self.reset_in(now):.0f} s, after this run's time limit (next was {what})"
        )

    # --- the run's clock ---

    def remaining(self) -> float:
        """Seconds left before the run's time limit (never negative)."""
        return max(0.0, self._started + self.max_seconds - self.clock())

    def elapsed(self) -> float:
        """Seconds since the Pacer was created (the run's clock)."""
        return self.clock() - self._started

    def rate_per_minute(self) -> float:
        """Achieved rate of request starts, first to last (0.0 with fewer than two requests).

        Measured between starts, like the spacing itself, so it is comparable with requests_per_minute.
        """
        if self._first is None or self._last is None or self.requests < 2 or self._last <= self._first:
            return 0.0
        return (self.requests - 1) * 60.0 / (self._last - self._first)


def _reset_between(earlier: Seen, later: Seen) -> bool:
    """The window reset between two answers: the first one's reset time passed, or more is left than
    before (nothing but a reset gives requests back, beyond what requests in flight together may)."""
    gave_back = later.quota.remaining - earlier.quota.remaining
    return later.at >= earlier.at + earlier.quota.reset or gave_back > IN_FLIGHT - 1


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
