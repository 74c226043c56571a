"""The fleet simulation's own machinery (tests/support/fleet.py): simulated time that interleaves blocking
code by wake-up time, and a small fleet whose figures can be checked by hand."""

from __future__ import annotations

from pathlib import Path

from tests.support.fleet import Quota, SimTime
from tests.support.fleet_scenario import Scenario, simulate


def test_sim_time_interleaves_sleepers_by_wake_up_time() -> None:
    sim = SimTime()
    seen: list[tuple[float, str]] = []

    def sleeper(name: str, naps: list[float]) -> None:
        for nap in naps:
            sim.sleep(nap)
            seen.append((sim.now(), name))

    sim.run([lambda: sleeper("a", [1.0, 5.0]), lambda: sleeper("b", [2.0, 2.0, 2.0])])
    assert seen == [(1.0, "a"), (2.0, "b"), (4.0, "b"), (6.0, "a"), (6.0, "b")]


def test_quota_counts_fixed_windows_and_says_so_in_headers() -> None:
    quota = Quota(limit=2, window=10.0)
    allowed, headers = quota.admit(0.0)
    assert allowed and headers["Ratelimit"] == '"default";r=1;t=10'
    assert headers["Ratelimit-Policy"] == '"default";q=2;w=10'
    assert quota.admit(9.0)[0]
    allowed, headers = quota.admit(9.5)
    assert not allowed and headers["Retry-After"] == "1" and headers["Ratelimit"] == '"default";r=0;t=1'
    # The next window gives the whole quota back (as Cloudflare's `t` says: when the next window resets),
    # where a sliding log would give back one request at a time.
    assert [quota.admit(10.0 + i)[0] for i in range(3)] == [True, True, False]


def test_a_small_fleet_gets_every_new_ban_to_the_edge_within_a_timer_period(tmp_path: Path) -> None:
    scenario = Scenario(hosts=2, rules=200, per_host=100, duration=900.0, burst=30, churn_per_hour=0.1)
    f = simulate(scenario, tmp_path)
    assert f.limited == 0 and f.partial_runs == 0
    assert f.at_edge == f.new_bans == 2 * 3 + 30  # 10 %/hour of 100 for a quarter hour, and the burst
    # A ban waits for the next tick (2 min, 15 s jitter) and its run's listing and writes.
    assert f.p99 is not None and f.p99 < 120 + 15 + 10
    assert f.runs == 2 * 8  # ticks at 0, 120, ... 840 s
    assert f.max_per_window <= f.requests


def test_a_quota_too_small_for_the_fleet_shows_as_429s(tmp_path: Path) -> None:
    scenario = Scenario(hosts=3, rules=200, per_host=100, duration=600.0, burst=0, quota=10)
    f = simulate(scenario, tmp_path)
    assert f.limited > 0 and f.partial_runs > 0
