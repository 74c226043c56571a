"""The account's quota (issue 19, DESIGN §12): the headers read into a Quota, the Pacer's budget maths on a
fake clock against a simulated account counter (property tests), the permission each endpoint needs, and
capacity evictions spread over runs. No server, no socket, no real time."""

from __future__ import annotations

import ipaddress
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconcile.cloudflare import permissions
from reconcile.cloudflare.answers import Quota, quota
from reconcile.cloudflare.list_plan import OVER_CAPACITY, fit_capacity, item_rule
from reconcile.cloudflare.pacing import BURST, Pacer, QuotaSpent
from reconcile.core.changes import Action, Capacity, Policy
from reconcile.core.model import Ban, Rule, RuleListing, Scope, ScopeKind
from reconcile.core.notes import Lease, format_note
from reconcile.core.planner import make_plan
from reconcile.core.safety import unsafe_reasons
from reconcile.errors import BudgetExhausted

# --- the headers ------------------------------------------------------------------------------------------


def test_ietf_headers_give_r_t_q_w() -> None:
    got = quota({"Ratelimit": '"default";r=50;t=30', "Ratelimit-Policy": '"default";q=1200;w=300'}, None)
    assert got == Quota(50, 30.0, 1200, 300.0)


def test_legacy_headers_are_read_when_the_ietf_ones_are_missing() -> None:
    headers = {"X-RateLimit-Limit": "1200", "X-RateLimit-Remaining": "7", "X-RateLimit-Reset": "12"}
    assert quota(headers, None) == Quota(7, 12.0, 1200, None)


def test_a_legacy_reset_that_is_a_unix_time_is_counted_from_the_answers_date() -> None:
    headers = {"X-RateLimit-Remaining": "7", "X-RateLimit-Reset": "1800000100"}
    assert quota(headers, 1_800_000_000.0) == Quota(7, 100.0)
    assert quota(headers, None) is None  # no Date: the reset is unknown, so nothing is stated


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Ratelimit": "garbage"},
        {"Ratelimit": '"default";r=-1;t=3'},
        {"Ratelimit": '"default";r=5;t=nan'},
        {"Ratelimit": '"default";r=5'},
        {"X-RateLimit-Remaining": "x", "X-RateLimit-Reset": "3"},
        {"Ratelimit": '"default";r=' + "9" * 40 + ";t=1"},
        {"Ratelimit": '"default";r=5;t=1e308'},  # a broken header is no reason to wait for ever
        {"Ratelimit": '"default";r=5;t=86401'},
        {"X-RateLimit-Remaining": "5", "X-RateLimit-Reset": "1e12"},
    ],
)
def test_absent_or_unreadable_headers_state_nothing(headers: dict[str, str]) -> None:
    assert quota(headers, None) is None


def test_the_default_item_is_read_among_several() -> None:
    got = quota({"Ratelimit": '"burst";r=5;t=3, "default";r=1;t=2'}, None)
    assert got == Quota(1, 2.0)


def test_a_policy_below_what_is_left_is_not_trusted() -> None:
    got = quota({"Ratelimit": '"default";r=50;t=30', "Ratelimit-Policy": '"default";q=10;w=300'}, None)
    assert got == Quota(50, 30.0, None, 300.0)


# --- the pacer against a simulated account ---------------------------------------------------------------


class Account:
    """Cloudflare's counter for one account on a fake clock: a fixed window of `q` requests per `w` s,
    a neighbour spending `others` requests per second evenly; our requests go through `request()`."""

    def __init__(self, q: int, w: float, others: float, spent_before: int = 0) -> None:
        self.q, self.w, self.others = q, w, others
        self.now = 0.0
        self.window = 0
        self.count = spent_before
        self.others_done = 0.0  # fractional requests of the neighbour in this window
        self.ours_limited = 0
        self.others_limited = 0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self._advance(self.now + seconds)

    def _advance(self, to: float) -> None:
        while self.now < to:
            end = (self.window + 1) * self.w
            step_to = min(to, end)
            due = self.others * (step_to - self.window * self.w)
            while self.others_done + 1 <= due:
                self.others_done += 1
                self.count += 1
                if self.count > self.q:
                    self.others_limited += 1
            self.now = step_to
            if step_to >= end:
                self.window += 1
                self.count, self.others_done = 0, 0.0

    def request(self) -> Quota:
        self.count += 1
        if self.count > self.q:
            self.ours_limited += 1
        reset = (self.window + 1) * self.w - self.now
        return Quota(max(0, self.q - self.count), reset, self.q, self.w)


def drive(pacer: Pacer, account: Account, requests: int, latency: float = 0.01) -> int:
    """Send up to `requests` requests through the pacer; the number sent before it stopped the run."""
    sent = 0
    try:
        for i in range(requests):
            pacer.acquire(f"GET /{i}")
            if latency:
                account._advance(account.now + latency)  # the request's own round trip
            pacer.observe(account.request())
            sent += 1
    except BudgetExhausted:
        pass
    return sent


@given(
    q=st.integers(50, 2000),
    share=st.floats(0.0, 0.5),
    rpm=st.floats(30, 6000),
    max_seconds=st.floats(5, 400),
    spent_before=st.floats(0.0, 0.95),
)
def test_no_429_for_the_run_or_a_neighbour_spending_up_to_half_the_quota(
    q: int, share: float, rpm: float, max_seconds: float, spent_before: float
) -> None:
    w = 300.0
    account = Account(q, w, others=share * q / w, spent_before=int(spent_before * q))
    pacer = Pacer(rpm, 100_000, max_seconds, account.clock, account.sleep)
    drive(pacer, account, 3 * q)
    assert account.ours_limited == 0
    assert account.others_limited == 0


@given(rpm=st.floats(60, 6000), seconds=st.floats(10, 200))
def test_requests_per_minute_stays_a_ceiling_on_the_sustained_rate(rpm: float, seconds: float) -> None:
    account = Account(10**9, 300.0, others=0.0)
    pacer = Pacer(rpm, 10**9, seconds, account.clock, account.sleep)
    sent = drive(pacer, account, 10**6, latency=0.0)
    # At most the rate over the run's time, plus one burst.
    assert sent <= rpm * seconds / 60 + BURST + 1


def test_a_plentiful_quota_lets_a_burst_go_at_once_then_the_rate_holds() -> None:
    account = Account(1200, 300.0, others=0.0)
    pacer = Pacer(200, 600, 100, account.clock, account.sleep)
    drive(pacer, account, BURST, latency=0.0)
    assert account.sleeps == []
    account.sleeps.clear()
    drive(pacer, account, 5, latency=0.0)
    assert all(s == pytest.approx(0.3) for s in account.sleeps)


def test_without_quota_headers_requests_are_spaced_as_before() -> None:
    account = Account(1200, 300.0, others=0.0)
    pacer = Pacer(200, 600, 100, account.clock, account.sleep)
    for i in range(5):
        pacer.acquire(f"GET /{i}")
        pacer.observe(None)
    assert account.sleeps == [pytest.approx(0.3)] * 4


def test_at_the_reserve_it_waits_for_a_reset_within_the_time_limit() -> None:
    account = Account(100, 30.0, others=0.0, spent_before=85)
    pacer = Pacer(6000, 1000, 100, account.clock, account.sleep)
    assert drive(pacer, account, 20) == 20
    assert pacer.waited_for_reset == pytest.approx(30.0, abs=1.0)
    assert account.ours_limited == 0


def test_at_the_reserve_with_the_reset_after_the_time_limit_it_stops_and_says_who_spent_it() -> None:
    account = Account(1200, 300.0, others=0.0, spent_before=1100)
    pacer = Pacer(6000, 1000, 100, account.clock, account.sleep)
    with pytest.raises(QuotaSpent) as stopped:
        for i in range(200):
            pacer.acquire(f"GET /{i}")
            pacer.observe(account.request())
    text = str(stopped.value)
    assert stopped.value.exit_code == 4
    assert "the account's API quota is spent down to the reserve" in text
    assert "1100 before it" in text and "of 1200 requests left" in text
    assert account.count == 1101  # only the first request, sent before any answer said what was left


def test_the_others_rate_is_what_r_lost_beyond_our_own_requests() -> None:
    account = Account(1200, 300.0, others=2.0)
    pacer = Pacer(60, 1000, 100, account.clock, account.sleep)
    drive(pacer, account, 40)
    assert pacer.others_rate() == pytest.approx(2.0, rel=0.1)
    assert pacer.others_spent == pytest.approx(2.0 * account.now, abs=3)
    # The reserve covers the others' need until the reset, on top of the share.
    now = account.now
    assert pacer.reserve(now) == pytest.approx(120 + pacer.others_rate() * pacer.reset_in(now))


def test_a_burst_of_others_is_not_taken_for_a_pace_faster_than_the_windows_own() -> None:
    # 100 s into the window, 200 spent. Another host lists 100 rules pages in the half second this run
    # watches: 200 a second until the reset 200 s away would reserve the whole quota, and ten hosts stopped
    # each other's runs at a third of it (issue 18's fleet). No pace is kept up faster than the window's
    # own so far: (200 + 100 - our 2) / 100.5 s.
    now = [100.0]
    pacer = Pacer(6000, 1000, 100, clock=lambda: now[0], sleep=lambda s: None)
    pacer.acquire("GET /1")
    pacer.observe(Quota(999, 200.0, 1200, 300))
    now[0] = 100.5
    pacer.acquire("GET /2")
    pacer.observe(Quota(898, 199.5, 1200, 300))
    assert pacer.others_spent == 100
    assert pacer.others_rate() == pytest.approx((1200 - 898 - 2) / 100.5)
    assert pacer.reserve(now[0]) < 898 - 2 * BURST
    pacer.acquire("GET /3")
    assert pacer.waited_for_reset == 0.0 and pacer.requests == 3


def test_a_neighbour_that_starts_late_in_a_quiet_window_is_seen_at_its_own_pace() -> None:
    # 200 s of a quiet window, then a neighbour spends 4 a second. Watched for RATE_SPAN, that is its
    # pace, not the window's average (about 160 / 240 s), which would leave it short until the reset.
    now = [200.0]
    pacer = Pacer(6000, 1000, 100, clock=lambda: now[0], sleep=lambda s: None)
    left = 1200
    for second in range(41):
        now[0] = 200.0 + second
        pacer.acquire(f"GET /{second}")
        left -= 1 + (4 if second else 0)  # ours, and the neighbour's 4 since our last answer
        pacer.observe(Quota(left, 100.0 - second, 1200, 300))
    assert pacer.others_rate() == pytest.approx(4.0)
    assert pacer.reserve(now[0]) == pytest.approx(120 + 4.0 * 60.0)


def test_in_the_first_seconds_of_a_window_the_watched_rate_stands_alone() -> None:
    # 10 s into the window its pace says little; what the others spent while we watched is the rate.
    now = [10.0]
    pacer = Pacer(6000, 1000, 100, clock=lambda: now[0], sleep=lambda s: None)
    pacer.acquire("GET /1")
    pacer.observe(Quota(1100, 290.0, 1200, 300))
    now[0] = 11.0
    pacer.acquire("GET /2")
    pacer.observe(Quota(1049, 289.0, 1200, 300))
    assert pacer.others_rate() == pytest.approx(50.0)


def test_what_was_spent_before_the_run_is_not_taken_for_a_rate_of_others() -> None:
    # 600 of 1,200 spent in the first 30 s of the window (this host's own previous run, say): the run
    # goes on at once, down to the reserve, instead of reading it as 20 per second of others.
    account = Account(1200, 300.0, others=0.0, spent_before=600)
    account._advance(30.0)
    pacer = Pacer(6000, 1000, 100, account.clock, account.sleep)
    assert drive(pacer, account, 400, latency=0.0) == 400
    assert pacer.others_rate() == 0.0 and pacer.waited_for_reset == 0.0


def test_pacer_refuses_a_reserve_outside_0_to_1() -> None:
    with pytest.raises(ValueError, match="quota_reserve"):
        Pacer(60, 1, 1, quota_reserve=1.5)


# --- permissions ------------------------------------------------------------------------------------------

SEP = permissions.SEP


@pytest.mark.parametrize(
    ("method", "path", "wanted"),
    [
        ("GET", "/zones/z/firewall/access_rules/rules", f"{permissions.FIREWALL_SERVICES}{SEP}Edit"),
        ("DELETE", "/accounts/a/firewall/access_rules/rules/1", f"{permissions.ACCOUNT_FIREWALL}{SEP}Edit"),
        ("GET", "/accounts/a/rules/lists", f"{permissions.FILTER_LISTS}{SEP}Edit"),
        ("GET", "/zones/z/rulesets/phases/p/entrypoint", f"{permissions.ZONE_WAF}{SEP}Read"),
        ("POST", "/zones/z/rulesets", f"{permissions.ZONE_WAF}{SEP}Edit"),
        ("GET", "/user/tokens/verify", None),
    ],
)
def test_each_endpoint_names_its_permission(method: str, path: str, wanted: str | None) -> None:
    assert permissions.needed(method, path) == wanted


def test_only_a_403_names_a_permission() -> None:
    assert permissions.refused("GET /zones/z/firewall/access_rules/rules?page=1 -> HTTP 403: x") is not None
    assert permissions.refused("GET /zones/z/firewall/access_rules/rules?page=1 -> HTTP 500: x") is None


# --- capacity evictions spread over runs ------------------------------------------------------------------

TAG = "Blocked by fail2ban"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
LIST = Scope(ScopeKind.LIST, "c" * 32)


def _own(i: int) -> tuple[Ban, Rule]:
    ip = ipaddress.ip_address(f"45.190.0.{i + 1}")
    since = NOW - timedelta(hours=2)
    note = format_note(TAG, Lease(("sshd",), ("web1",), since, NOW + timedelta(hours=1)))
    rule = item_rule({"id": f"{i:032x}", "ip": str(ip), "comment": note}, LIST, "block", "GET")
    return Ban(ip, ("sshd",), since, NOW + timedelta(hours=1)), rule


@pytest.mark.parametrize("fraction", [0.3, 0.1, 0.5])
def test_a_burst_into_a_full_list_evicts_at_most_the_guards_share_and_is_never_refused(
    fraction: float,
) -> None:
    owned = [_own(i) for i in range(50)]
    new = [
        Ban(ipaddress.ip_address(f"45.191.0.{i + 1}"), ("sshd",), NOW, NOW + timedelta(hours=1))
        for i in range(30)
    ]
    bans = [b for b, _ in owned] + new
    plan = make_plan(bans, [], [RuleListing(LIST, tuple(r for _, r in owned))], Policy(TAG, "web1"), NOW)
    fitted = fit_capacity(plan, 50, 50, "web1", fraction).plan
    evicted = sum(1 for c in fitted.changes if c.capacity is Capacity.EVICTED)
    assert evicted == math.floor(fraction * 50)
    assert fitted.count(Action.ADD) == evicted
    assert sum(1 for c in fitted.changes if c.reason == OVER_CAPACITY) == 30 - evicted
    assert unsafe_reasons(fitted, fraction) == []


def test_a_slow_configured_rate_allows_no_burst() -> None:
    # 1 request a minute means it: a burst is at most 6 s of the rate, here none.
    account = Account(1200, 300.0, others=0.0)
    pacer = Pacer(1, 600, 3600, account.clock, account.sleep)
    drive(pacer, account, 3, latency=0.0)
    assert account.sleeps == [pytest.approx(60.0)] * 2
