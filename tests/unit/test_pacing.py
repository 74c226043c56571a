"""Pacer and backoff, on a fake clock: no test here waits for real time."""

from __future__ import annotations

import itertools

import pytest

from reconcile.cloudflare.pacing import Pacer, backoff
from reconcile.errors import BudgetExhausted


class FakeClock:
    """A monotonic clock that only moves when something sleeps on it (or a test advances it)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


def make(rpm: float = 200, max_requests: int = 600, max_seconds: float = 3600) -> tuple[Pacer, FakeClock]:
    clock = FakeClock()
    return Pacer(rpm, max_requests, max_seconds, clock=clock, sleep=clock.sleep), clock


@pytest.mark.parametrize("n", [1, 2, 7, 100])
def test_requests_at_200_per_minute_are_spaced_0_3_s(n: int) -> None:
    pacer, clock = make(rpm=200)
    starts = []
    for i in range(n):
        pacer.acquire(f"GET /r{i}")
        starts.append(clock.now)
    assert sum(clock.sleeps) == pytest.approx((n - 1) * 0.3)
    assert all(b - a == pytest.approx(0.3) for a, b in itertools.pairwise(starts))
    assert pacer.requests == n
    assert pacer.elapsed() == pytest.approx((n - 1) * 0.3)


def test_first_request_is_not_delayed() -> None:
    pacer, clock = make(rpm=1)
    pacer.acquire("GET /first")
    assert clock.sleeps == []


def test_time_spent_elsewhere_counts_towards_the_spacing() -> None:
    pacer, clock = make(rpm=200)
    pacer.acquire("a")
    clock.now += 0.2  # the request itself took 0.2 s
    pacer.acquire("b")
    assert clock.sleeps == [pytest.approx(0.1)]
    clock.now += 5.0  # a long pause: no wait at all
    pacer.acquire("c")
    assert len(clock.sleeps) == 1


def test_a_sleep_that_returns_early_does_not_squeeze_requests() -> None:
    clock = FakeClock()
    pacer = Pacer(60, 10, 100, clock=clock, sleep=lambda s: None)  # sleep does nothing, clock stands still
    pacer.acquire("a")
    pacer.acquire("b")
    pacer.acquire("c")
    # The third start is planned 1 s after the second, which was planned 1 s after the first.
    assert pacer.rate_per_minute() == pytest.approx(60.0)


def test_rate_per_minute_reports_achieved_rate() -> None:
    pacer, _ = make(rpm=200)
    assert pacer.rate_per_minute() == 0.0
    pacer.acquire("a")
    assert pacer.rate_per_minute() == 0.0
    for _ in range(9):
        pacer.acquire("x")
    assert pacer.rate_per_minute() == pytest.approx(200.0)
    pacer2, clock2 = make(rpm=200)
    pacer2.acquire("a")
    clock2.now += 0.9
    pacer2.acquire("b")
    assert pacer2.rate_per_minute() == pytest.approx(60 / 0.9)


def test_budget_is_exhausted_at_exactly_max_requests() -> None:
    pacer, _ = make(rpm=6000, max_requests=600)
    for i in range(600):
        pacer.acquire(f"GET /r{i}")
    with pytest.raises(BudgetExhausted, match="request budget of 600 used up"):
        pacer.acquire("GET /one-more")
    assert pacer.requests == 600
    # and it stays exhausted
    with pytest.raises(BudgetExhausted):
        pacer.acquire("GET /again")
    assert pacer.requests == 600


def test_zero_budget_refuses_the_first_request() -> None:
    pacer, clock = make(max_requests=0)
    with pytest.raises(BudgetExhausted, match="budget of 0"):
        pacer.acquire("GET /x")
    assert pacer.requests == 0 and clock.sleeps == []


def test_budget_exhausted_exit_code_is_partial() -> None:
    pacer, _ = make(max_requests=0)
    with pytest.raises(BudgetExhausted) as info:
        pacer.acquire("GET /x")
    assert info.value.exit_code == 4


def test_deadline_passed_stops_the_run() -> None:
    pacer, clock = make(rpm=200, max_seconds=10)
    pacer.acquire("a")
    clock.now += 10.5
    with pytest.raises(BudgetExhausted, match="time limit of 10 s"):
        pacer.acquire("GET /late")
    assert pacer.requests == 1


def test_deadline_that_would_pass_during_the_wait_stops_without_sleeping() -> None:
    pacer, clock = make(rpm=6, max_seconds=15)  # one request per 10 s
    pacer.acquire("a")
    pacer.acquire("b")  # waits 10 s: now at 10 s of 15
    assert clock.sleeps == [pytest.approx(10.0)]
    with pytest.raises(BudgetExhausted, match="time limit"):
        pacer.acquire("c")  # would start at 20 s > 15 s
    assert clock.sleeps == [pytest.approx(10.0)]  # did not sleep in vain
    assert pacer.requests == 2


def test_deadline_counts_from_creation_not_from_first_request() -> None:
    pacer, clock = make(max_seconds=5)
    clock.now += 6
    with pytest.raises(BudgetExhausted):
        pacer.acquire("first")


@pytest.mark.parametrize(
    ("rpm", "max_requests", "max_seconds"),
    [(0, 1, 1), (-1, 1, 1), (1, -1, 1), (1, 1, 0), (float("nan"), 1, 1)],
)
def test_invalid_settings_are_refused(rpm: float, max_requests: int, max_seconds: float) -> None:
    with pytest.raises(ValueError):
        Pacer(rpm, max_requests, max_seconds)


def test_backoff_is_bounded_exponential_with_full_jitter() -> None:
    # rand -> just below 1: the ceiling; rand -> 0: no wait at all.
    top = 0.999999
    assert backoff(0, rand=lambda: top) == pytest.approx(0.5, rel=1e-5)
    assert backoff(1, rand=lambda: top) == pytest.approx(1.0, rel=1e-5)
    assert backoff(2, rand=lambda: top) == pytest.approx(2.0, rel=1e-5)
    assert backoff(3, rand=lambda: top) == pytest.approx(4.0, rel=1e-5)
    assert backoff(4, rand=lambda: top) == pytest.approx(8.0, rel=1e-5)
    assert backoff(5, rand=lambda: top) == pytest.approx(8.0, rel=1e-5)  # capped
    assert backoff(10_000, rand=lambda: top) == pytest.approx(8.0, rel=1e-5)  # no overflow
    assert backoff(3, rand=lambda: 0.0) == 0.0
    assert backoff(2, base=1.0, cap=3.0, rand=lambda: 0.5) == pytest.approx(1.5)


def test_backoff_with_real_randomness_stays_within_bounds_and_varies() -> None:
    for attempt in range(8):
        values = {backoff(attempt) for _ in range(200)}
        ceiling = min(8.0, 0.5 * 2**attempt)
        assert all(0.0 <= v < ceiling for v in values)
        assert len(values) > 100  # jittered, not constant


def test_backoff_refuses_negative_attempt() -> None:
    with pytest.raises(ValueError):
        backoff(-1)


def test_remaining_counts_down_to_zero() -> None:
    pacer, clock = make(max_seconds=100)
    assert pacer.remaining() == 100
    clock.now += 60
    assert pacer.remaining() == 40
    clock.now += 500
    assert pacer.remaining() == 0
