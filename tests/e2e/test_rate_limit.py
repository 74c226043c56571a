"""A 2,000-ban burst against the emulator's real rate limit (issue 3), on a clock the test drives.

Cloudflare allows 1,200 requests per 300 s per token. The product's Pacer and the emulator's rate limiter
share one virtual clock that moves only when the Pacer waits (a request takes no time) and when the test
starts the next run (the systemd timer's interval, TIMER): the product's own settings (requests_per_minute
200, budget 600, [run] max_seconds 100) apply unscaled, and how fast this machine is changes nothing (in
real time, scaled 30 times, a loaded machine fell behind the pace and needed more than 15 runs). Runs go
through run.execute in this process with the product's own Pacer, which reports the achieved rate.
`pytest -s` prints the figures.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from reconcile.cloudflare.pacing import Pacer
from reconcile.errors import RateLimited
from tests.support.cf_emulator import CloudflareEmulator, checked_emulator
from tests.support.f2b_server import F2B
from tests.support.harness import Harness, make_harness

pytestmark = [pytest.mark.fail2ban, pytest.mark.slow]

LIMIT, WINDOW = 1200, 300.0  # Cloudflare's: requests per window of seconds
RPM, BUDGET, MAX_SECONDS, TIMER = 200.0, 600, 100.0, 120.0  # the product's defaults
BURST = 2000
MAX_RUNS = 15


class VirtualClock:
    """Seconds that pass only when someone sleeps: the Pacer between requests, the test between runs."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


def burst() -> list[str]:
    first = ipaddress.ip_address("45.155.0.1")
    return [str(first + i) for i in range(BURST)]


@dataclass(frozen=True)
class RunFigures:
    exit_code: int
    requests: int  # counted by the Pacer: every attempt, list pages included
    seconds: float  # real
    rate: float  # achieved requests per real minute, first to last request start


class Stamps(requests.Session):
    """Notes when each request starts (on the clock), for the busiest-window figure."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.clock = clock
        self.starts: list[float] = []

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        self.starts.append(self.clock())
        return super().request(*args, **kwargs)


def busiest_window(starts: list[float]) -> int:
    """The most requests that started within any WINDOW seconds (a sliding window)."""
    times = sorted(starts)
    return max((bisect.bisect_left(times, t + WINDOW) - i for i, t in enumerate(times)), default=0)


@pytest.fixture
def burst_f2b(f2b: F2B) -> F2B:
    f2b.ban("sshd", *burst())
    return f2b


def harness_for(f2b: F2B, cf: CloudflareEmulator, tmp_path: Path) -> Iterator[Harness]:
    for h in make_harness(f2b, cf, tmp_path):
        h.config(fail2ban={"jails": ["sshd"]}, cloudflare={"timeout": 60})
        yield h


def test_a_2000_ban_burst_stays_under_the_limit_and_finishes_over_several_runs(
    burst_f2b: F2B, tmp_path: Path
) -> None:
    clock = VirtualClock()
    # Without quota headers (as before 0.3 read them): the product paces by requests_per_minute alone.
    with checked_emulator(
        rate_limit=LIMIT, rate_window=WINDOW, validate_responses=False, clock=clock, rate_headers="none"
    ) as cf:
        for h in harness_for(burst_f2b, cf, tmp_path):
            runs: list[RunFigures] = []
            stamps = Stamps(clock)
            while len(runs) < MAX_RUNS:
                # The timer starts a run every TIMER seconds (runs never overlap: the lock).
                clock.sleep(max(0.0, len(runs) * TIMER - clock()))
                pacer = Pacer(RPM, BUDGET, MAX_SECONDS, clock=clock, sleep=clock.sleep)
                outcome = h.execute(pacer=pacer, session=stamps)
                runs.append(
                    RunFigures(outcome.exit_code, pacer.requests, pacer.elapsed(), pacer.rate_per_minute())
                )
                if outcome.exit_code != 4:
                    break
            stamps.close()
            peak = busiest_window(stamps.starts)
            report(runs, cf, peak)

            assert cf.rate_limited == 0, "a paced burst hit Cloudflare's rate limit"
            assert [r.exit_code for r in runs] == [4] * (len(runs) - 1) + [0]
            assert len(runs) > 1, "the burst did not even need a second run: the test proves nothing"
            assert set(h.rules()) == set(burst())
            assert sum(r.requests for r in runs) == len(cf.requests) == len(stamps.starts)
            assert peak <= RPM * WINDOW / 60 < LIMIT
            for r in runs:
                assert r.requests <= BUDGET
                assert r.rate <= RPM * 1.001
                assert r.seconds <= MAX_SECONDS  # the deadline stops runs, never overshoots


def report(runs: list[RunFigures], cf: CloudflareEmulator, peak: int) -> None:
    total = sum(r.requests for r in runs)
    print(f"\n{BURST}-ban burst, on a virtual clock:")
    for i, r in enumerate(runs, 1):
        print(
            f"  run {i}: exit {r.exit_code}, {r.requests} requests (budget {BUDGET}), "
            f"{r.seconds:.0f} s, {r.rate:.1f} requests/min (limit {RPM:g})"
        )
    print(
        f"  {len(runs)} runs over {(len(runs) - 1) * TIMER + runs[-1].seconds:.0f} s, "
        f"{total} requests, {cf.rate_limited} answered 429"
    )
    print(
        f"  busiest {WINDOW:g} s window: {peak} requests (pacing allows {RPM * WINDOW / 60:.0f}, "
        f"Cloudflare {LIMIT})"
    )


def test_without_pacing_the_same_burst_is_rate_limited_and_the_run_stops_at_the_first_429(
    burst_f2b: F2B, tmp_path: Path
) -> None:
    # Control: no spacing and no per-run budget. Unpaced, the client runs at this machine's speed, so the
    # window is left unscaled (300 real s) and the outcome does not depend on how fast the machine is.
    # No quota headers either: with them the product stops at the reserve instead (test_quota.py).
    with checked_emulator(
        rate_limit=LIMIT, rate_window=WINDOW, validate_responses=False, rate_headers="none"
    ) as cf:
        for h in harness_for(burst_f2b, cf, tmp_path):
            pacer = Pacer(1e12, 100_000, 3600)
            outcome = h.execute(pacer=pacer)
            assert outcome.exit_code == 4 and outcome.applied is not None
            stopped = outcome.applied.stopped
            assert isinstance(stopped, RateLimited) and stopped.retry_after
            assert cf.rate_limited == 1, "requests went on after the first 429"
            assert len(cf.requests) == LIMIT + 1 == pacer.requests
            assert cf.requests[-1].status == 429
            assert len(h.rules()) == LIMIT - 1  # one listing request, then creates until the limit
            print(
                f"\nunpaced control: {pacer.requests} requests at {pacer.rate_per_minute():.0f}/min real, "
                f"request {LIMIT + 1} answered 429 (retry after {stopped.retry_after:g} s), run stopped"
            )
