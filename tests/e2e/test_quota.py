"""What the product shares but does not own at Cloudflare (issue 19, DESIGN §12, §9): the account's API
quota, a least-privilege token, the account's list room. Through the installed command against real
fail2ban servers and the emulator, whose limiter states the quota on every answer.

The quota cases run scaled: the emulator's clock runs SCALE times faster (its 300 s window passes in
300/SCALE real seconds, and its headers state `t` and `w` in real seconds), and the product's own
settings are scaled alike (requests_per_minute times SCALE, max_seconds and the timer divided by it).
The quota and the bans are a fifth of the issue's (1,200 -> 240, 1,000 bans -> 200; the neighbour case
200 bans, not 400, to stay short), so each case takes seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconcile.cloudflare import permissions
from reconcile.cloudflare.pacing import Pacer
from tests.support.cf_emulator import ZONE_ID, CloudflareEmulator, checked_emulator
from tests.support.f2b_server import F2B, ServerPool
from tests.support.harness import Harness, make_harness

pytestmark = [pytest.mark.fail2ban]

SCALE = 30.0
QUOTA, WINDOW = 240, 300.0  # per emulated window: Cloudflare's 1,200 per 300 s, a fifth of it
TIMER = 120.0 / SCALE  # the systemd timer's 2 minutes, in real seconds
SCALED = {
    "requests_per_minute": 200 * SCALE,
    "max_requests_per_run": 120,  # 600 of 1,200, as the default is
    "timeout": 30,
}
FIREWALL_SERVICES = permissions.FIREWALL_SERVICES
TAG = "Blocked by fail2ban"


def addresses(count: int, prefix: str) -> list[str]:
    return [f"{prefix}.{i // 250}.{i % 250 + 1}" for i in range(count)]


def scaled_config(h: Harness, host: str) -> None:
    h.config(cloudflare=SCALED, policy={"host_id": host}, run={"max_seconds": 100 / SCALE})


@pytest.fixture
def web2_f2b(f2b_pool: ServerPool) -> Iterator[F2B]:
    with f2b_pool.server() as server:
        yield server


def harness_pair(
    f2b: F2B, web2: F2B, cf: CloudflareEmulator, tmp_path: Path
) -> Iterator[tuple[Harness, Harness]]:
    (tmp_path / "web1").mkdir()
    (tmp_path / "web2").mkdir()
    one, two = make_harness(f2b, cf, tmp_path / "web1"), make_harness(web2, cf, tmp_path / "web2")
    yield next(one), next(two)
    for gen in (one, two):
        with pytest.raises(StopIteration):
            next(gen)


def on_timer(hosts: list[Harness], done: Callable[[], bool], rounds: int) -> list[list[int]]:
    """Every TIMER seconds each host's timer starts a run (concurrently, as on separate servers), until
    `done()`; the exit codes per round."""
    codes: list[list[int]] = []
    started = time.monotonic()
    for n in range(rounds):
        time.sleep(max(0.0, started + n * TIMER - time.monotonic()))
        results: list[int] = [0] * len(hosts)
        threads = [threading.Thread(target=_run_into, args=(h, results, i)) for i, h in enumerate(hosts)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes.append(results)
        if done():
            break
    return codes


def _run_into(h: Harness, results: list[int], i: int) -> None:
    result = h.run(timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    results[i] = result.returncode


def _neighbour(cf: CloudflareEmulator, stop: threading.Event, pace: float) -> None:
    """Another client of the account: one request every `pace` seconds until `stop`."""
    while not stop.wait(pace):
        cf.spend(1)


def _all_at_edge(h: Harness, bans: set[str]) -> Callable[[], bool]:
    return lambda: set(h.rules()) >= bans


# --- the quota -------------------------------------------------------------------------------------------


def test_two_hosts_with_200_new_bans_each_meet_no_429_and_every_ban_reaches_the_edge(
    f2b: F2B, web2_f2b: F2B, tmp_path: Path
) -> None:
    with checked_emulator(
        rate_limit=QUOTA, rate_window=WINDOW, time_scale=SCALE, validate_responses=False
    ) as cf:
        for web1, web2 in harness_pair(f2b, web2_f2b, cf, tmp_path):
            one, two = addresses(200, "45.171"), addresses(200, "45.172")
            web1.f2b.ban("sshd", *one)
            web2.f2b.ban("sshd", *two)
            scaled_config(web1, "web1")
            scaled_config(web2, "web2")
            codes = on_timer([web1, web2], _all_at_edge(web1, {*one, *two}), rounds=15)
            assert cf.rate_limited == 0, f"429s: {cf.rate_limited} (exit codes {codes})"
            assert set(web1.rules()) == {*one, *two}, codes
            assert all(code in (0, 4) for round_ in codes for code in round_), codes


def test_a_neighbour_spending_half_the_quota_evenly_meets_no_429_and_neither_does_the_run(
    f2b: F2B, tmp_path: Path
) -> None:
    with checked_emulator(
        rate_limit=QUOTA, rate_window=WINDOW, time_scale=SCALE, validate_responses=False
    ) as cf:
        for h in make_harness(f2b, cf, tmp_path):
            bans = addresses(200, "45.173")
            h.f2b.ban("sshd", *bans)
            scaled_config(h, "web1")
            stop = threading.Event()
            # Half the quota per window, one request at a time at an even pace.
            pace = (WINDOW / SCALE) / (QUOTA / 2)
            thread = threading.Thread(target=_neighbour, args=(cf, stop, pace), daemon=True)
            thread.start()
            try:
                codes = on_timer([h], _all_at_edge(h, set(bans)), rounds=25)
            finally:
                stop.set()
                thread.join()
            assert cf.rate_limited == 0, f"the run met {cf.rate_limited} 429s (exit codes {codes})"
            assert cf.neighbour_limited == 0, f"the neighbour met {cf.neighbour_limited} 429s"
            assert set(h.rules()) == set(bans), codes
            assert cf.neighbour_spent > QUOTA / 2  # it did spend, over more than one window


def test_quota_nearly_spent_stops_with_exit_4_saying_why_and_the_next_window_converges(
    harness: Harness, cf: CloudflareEmulator
) -> None:
    # Unscaled: the reset (about 300 s away) is after the run's time limit, so it stops, not waits.
    bans = addresses(30, "45.174")
    harness.f2b.ban("sshd", *bans)
    harness.config(run={"max_seconds": 60})
    assert cf.spend(1190)  # a dashboard user or another tool spent it
    metrics = harness.workdir / "reconcile.prom"
    harness.config(run={"max_seconds": 60}, metrics={"textfile": str(metrics)})
    spent = harness.run()
    assert spent.returncode == 4, spent.stderr
    assert cf.rate_limited == 0
    assert "the account's API quota is spent down to the reserve" in spent.stderr
    assert "1190 before it" in spent.stderr  # what the others spent, counted from the first answer
    assert len(harness.rules()) < len(bans)
    prom = metrics.read_text()
    assert "reconcile_api_quota_limit 1200.0" in prom and "reconcile_api_quota_remaining " in prom
    assert "reconcile_api_quota_reset_seconds " in prom
    check = harness.run("--check")
    assert "API quota" in check.stdout and "below the reserve" in check.stdout, check.stdout
    # The window resets: the next run converges.
    cf.set_clock_offset(cf.window_remaining() + 1)
    again = harness.run()
    assert again.returncode == 0, again.stderr
    assert set(harness.rules()) == set(bans)
    assert cf.rate_limited == 0


def test_a_kicked_run_lists_10_pages_and_writes_in_one_burst_while_the_quota_is_plentiful(
    harness: Harness, cf: CloudflareEmulator
) -> None:
    # 200 per minute would space 11 requests over 3 s; a burst sends them at once (issue 18's latency).
    for i in range(50):
        cf.add_rule("zone", ZONE_ID, "ip", f"45.175.0.{i + 1}", notes="someone else's")
    harness.f2b.ban("sshd", "45.176.0.1")
    harness.config(cloudflare={"requests_per_minute": 200})
    slept: list[float] = []
    pacer = Pacer(200, 600, 300, sleep=slept.append)
    outcome = harness.execute(per_page=5, pacer=pacer)
    assert outcome.exit_code == 0 and "45.176.0.1" in harness.rules()
    assert outcome.stats.requests == 11  # 10 pages and the create
    assert slept == [], "the burst was spaced"
    assert outcome.quota is not None and outcome.quota.limit == 1200
    # Without the quota headers the same run is spaced at 200 per minute, as before they were read.
    cf.rate_headers = "none"
    harness.f2b.ban("sshd", "45.176.0.2")
    spaced: list[float] = []
    # Time is driven: only the recorded sleeps move the clock, so no wait shrinks by how long this machine
    # took between two requests (it made the first wait 0.14 s on a slow run).
    clock = [0.0]

    def sleep(seconds: float) -> None:
        spaced.append(seconds)
        clock[0] += seconds

    outcome = harness.execute(per_page=5, pacer=Pacer(200, 600, 300, lambda: clock[0], sleep))
    assert outcome.exit_code == 0 and outcome.quota is None
    # Every request but the first waits its turn (the sleep is recorded, not slept).
    assert len(spaced) == outcome.stats.requests - 1 and spaced[0] > 0.2, spaced


# --- least privilege -------------------------------------------------------------------------------------


def test_list_backend_without_firewall_services_syncs_with_one_warning_and_check_names_it(
    f2b: F2B, tmp_path: Path
) -> None:
    with checked_emulator(denied={"firewall_services"}) as cf:
        for h in make_harness(f2b, cf, tmp_path):
            h.f2b.ban("sshd", "45.177.0.1", "45.177.0.2")
            cf.seed_entrypoint(ZONE_ID, [{"action": "block", "expression": "(ip.src in $fail2ban)"}])
            h.list_config()
            result = h.run()
            assert result.returncode == 0, result.stderr
            assert set(h.items()) == {"45.177.0.1", "45.177.0.2"}
            warnings = [line for line in result.stderr.splitlines() if FIREWALL_SERVICES in line]
            assert len(warnings) == 1, result.stderr
            assert "not retiring this host's old IP Access Rules" in warnings[0]
            writes = len(cf.writes())
            check = h.run("--check")
            assert len(cf.writes()) == writes  # --check writes nothing
            assert check.returncode == 0, check.stdout  # a warning, not a failure
            line = next(x for x in check.stdout.splitlines() if "old IP Access Rules" in x)
            assert line.startswith("warn") and FIREWALL_SERVICES in check.stdout, check.stdout


def test_check_names_the_missing_permission_of_each_read(f2b: F2B, tmp_path: Path) -> None:
    with checked_emulator(denied={"account_filter_lists", "zone_waf"}) as cf:
        for h in make_harness(f2b, cf, tmp_path):
            h.list_config()
            check = h.run("--check")
            assert check.returncode == 1, check.stdout
            out = check.stdout
            assert f"{permissions.FILTER_LISTS}{permissions.SEP}Edit" in out, out
            assert f"{permissions.ZONE_WAF}{permissions.SEP}Read" in out, out


# --- the account's list room -----------------------------------------------------------------------------


def seeded_list(cf: CloudflareEmulator, ips: list[str], note: str) -> str:
    found = cf.create_list("fail2ban")
    for ip in ips:
        cf.add_item(found["id"], ip, note)
    return str(found["id"])


def test_another_list_holding_most_of_the_room_skips_adds_and_lets_renewals_land(harness: Harness) -> None:
    cf = harness.cf
    cf.lists_state.capacity_limit = 100  # the account's limit, across its lists
    other = cf.create_list("other_tool")
    for ip in addresses(90, "45.178"):
        cf.add_item(other["id"], ip, "another tool's")
    mine = addresses(5, "45.179")
    stale = f"{TAG} jail=sshd host=web1 since=2026-01-01T00:00:00Z until=2026-01-02T00:00:00Z"
    seeded_list(cf, mine, stale)  # this host's items, their leases stale: renewals due
    new = addresses(20, "45.180")
    harness.f2b.ban("sshd", *mine, *new)
    cf.seed_entrypoint(ZONE_ID, [{"action": "block", "expression": "(ip.src in $fail2ban)"}])
    harness.list_config(cloudflare={"list_capacity": 100})
    result = harness.run()
    assert result.returncode == 0, result.stderr
    items = harness.items()
    assert all("until=2026-01-02" not in items[ip]["comment"] for ip in mine), "renewals did not land"
    assert len(set(items) & set(new)) == 5  # the room: 100 - 90 - 5
    report = harness.run("--report", "--action", "skip")
    assert report.stdout.count("skip: over list capacity") == 15
    check = harness.run("--check")
    line = next(x for x in check.stdout.splitlines() if "IP list" in x)
    assert line.startswith("warn") and "'other_tool' 90" in line and "'fail2ban' 10" in line, check.stdout


def test_renewals_land_in_their_own_operation_when_the_adds_do_not_fit_the_account(
    harness: Harness,
) -> None:
    # The account's real limit is below list_capacity (another list grew since the listing, say): the
    # adds' operation fails at Cloudflare; the renewals went first, in an operation of their own.
    cf = harness.cf
    cf.lists_state.capacity_limit = 100
    other = cf.create_list("other_tool")
    for ip in addresses(90, "45.178"):
        cf.add_item(other["id"], ip, "another tool's")
    mine = addresses(5, "45.179")
    stale = f"{TAG} jail=sshd host=web1 since=2026-01-01T00:00:00Z until=2026-01-02T00:00:00Z"
    seeded_list(cf, mine, stale)
    new = addresses(20, "45.180")
    harness.f2b.ban("sshd", *mine, *new)
    cf.seed_entrypoint(ZONE_ID, [{"action": "block", "expression": "(ip.src in $fail2ban)"}])
    harness.list_config(cloudflare={"list_capacity": 1000})
    result = harness.run()
    assert result.returncode == 1, result.stderr  # the adds' operation failed
    items = harness.items()
    assert all("until=2026-01-02" not in items[ip]["comment"] for ip in mine), "renewals did not land"
    assert not set(items) & set(new)


def test_a_burst_into_a_full_list_gets_the_newest_bans_in_over_a_few_runs_never_exit_3(
    harness: Harness,
) -> None:
    harness.cf.lists_state.capacity_limit = 50
    old, new = addresses(50, "45.182"), addresses(30, "45.183")
    harness.f2b.ban("sshd", *old)
    harness.cf.seed_entrypoint(ZONE_ID, [{"action": "block", "expression": "(ip.src in $fail2ban)"}])
    harness.list_config(cloudflare={"list_capacity": 50})
    first = harness.run()
    assert first.returncode == 0 and set(harness.items()) == set(old), first.stderr
    time.sleep(1.1)  # fail2ban's times have second precision: the burst is newer
    harness.f2b.ban("sshd", *new)
    codes = []
    for _ in range(4):
        result = harness.run()
        codes.append(result.returncode)
        if set(new) <= set(harness.items()):
            break
    assert 3 not in codes and set(codes) == {0}, codes
    assert set(new) <= set(harness.items()) and len(harness.items()) == 50
    assert len(codes) == 2  # at most 15 (30 % of 50) make room per run
