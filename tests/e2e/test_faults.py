"""The fault matrix (issue 3): every fault kind at every step of a run, and what a run may do about it.

One real fail2ban-server for the module (its bans never change during the matrix), a fresh emulator per
case seeded with one rule of each kind. Most cases run in this process through run.execute with pages of
5 rules (the product lists 1000 per page; execute's client_factory is the seam), reading fail2ban's
unchanging bans once (read_once); a representative subset runs the installed `reconcile` command, for
the exit code and what an operator sees on stderr.

Invariants checked after every faulted run: exit code, untagged and other hosts' live rules untouched,
no rule of a still-banned IP deleted, no expiry after an incomplete listing, the error names the request,
no traceback; then one clean run must reach exactly the desired state.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconcile.config import Config
from reconcile.core.applied import Result
from reconcile.core.changes import Action
from reconcile.core.model import Fail2banState, Scope, ScopeKind
from reconcile.core.notes import NoteKind, parse_note
from reconcile.errors import BudgetExhausted, RateLimited, ReconcileError
from reconcile.fail2ban.state import read_configured
from reconcile.run import Outcome
from tests.support.cf_emulator import ZONE_ID, CloudflareEmulator, RequestRecord, checked_emulator
from tests.support.f2b_server import F2B, ServerPool
from tests.support.harness import (
    FAULT_STEPS,
    CountingSession,
    Harness,
    captured_logs,
    inject_at,
    make_harness,
    requests_made,
    wait_for_requests,
)

pytestmark = pytest.mark.fail2ban

TAG = "Blocked by fail2ban"
ZONE = Scope(ScopeKind.ZONE, ZONE_ID)
JAIL = "sshd"
RETRIES = 1  # two attempts per request
TIMEOUT = 0.5  # the client's HTTP timeout (s); the client raises it to its floor of 1 s
# The "delay" and "late" faults answer once the client has given up and closed the connection (at the
# latest after this long), so no answer races the client's timeout however loaded the machine is.
DELAY = LATE = 30.0
PER_PAGE = 5  # in-process pages: 15 rules -> 3 full pages (total_pages ends the listing)

# fail2ban's bans (all in sshd) and what the seeded rules make of them
ADD = ("45.155.205.11", "45.155.205.12", "2a06:4880:1::11")  # banned, no rule: add
RENEW_LEGACY = "45.155.205.21"  # banned, an older script's rule: adopt (renew)
RENEW_STALE = "45.155.205.22"  # banned, our rule with a stale lease: renew
FOREIGN = "45.155.205.31"  # banned, an untagged rule covers it: foreign, no request
OTHER_BANNED = "45.155.205.41"  # banned, another host's live lease covers it: joined
BANNED = (*ADD, RENEW_LEGACY, RENEW_STALE, FOREIGN, OTHER_BANNED)
EXPIRE = ("2a06:4880:1::63", "45.155.205.61", "45.155.205.62")  # our rules, not banned: expire

# "lost" and "late": the server carries the request out, but its answer is lost (reset) or comes too late.
KINDS = (
    "500",
    "502",
    "503",
    "success_false",
    "malformed_json",
    "missing_result",
    "reset",
    "delay",
    "400",
    "lost",
    "late",
)
RETRIED = frozenset({"500", "502", "503", "reset", "delay", "lost", "late"})  # 5xx, connection, timeout
STEPS = tuple(FAULT_STEPS)
METHOD = FAULT_STEPS
ACTION = {"create": Action.ADD, "renew": Action.RENEW, "delete": Action.EXPIRE}
# Through the installed command: every kind and every step at least once.
REAL_COMMAND = {
    ("500", "first page", "exhausted"),
    ("503", "later page", "exhausted"),
    ("missing_result", "later page", "exhausted"),
    ("502", "create", "exhausted"),
    ("503", "delete", "transient"),
    ("success_false", "renew", "exhausted"),
    ("malformed_json", "first page", "exhausted"),
    ("missing_result", "delete", "exhausted"),
    ("reset", "renew", "exhausted"),
    ("delay", "create", "exhausted"),
    ("400", "create", "exhausted"),
    ("reset", "first page", "transient"),
    ("lost", "create", "transient"),
}


def lease(host: str, jails: str = JAIL, until: str = "2099-01-01T00:00:00Z") -> str:
    return f"{TAG} jail={jails} host={host} since=2026-11-20T00:00:00Z until={until}"


@dataclass
class World:
    h: Harness
    seeded: dict[str, dict[str, Any]]  # name -> rule as seeded
    per_page: int  # the client's page size in this world's in-process runs

    @property
    def cf(self) -> CloudflareEmulator:
        return self.h.cf

    def ids(self, *names: str) -> set[str]:
        return {self.seeded[n]["id"] for n in names}

    @property
    def untouchable(self) -> list[str]:
        """Rules no run may change: untagged ones and other hosts' live leases."""
        return [n for n in self.seeded if n.startswith(("untagged", "other"))]

    @property
    def expiring(self) -> set[str]:
        return self.ids("expire_ours", "expire_legacy", "expire_v6")


def seed(h: Harness, per_page: int = PER_PAGE) -> World:
    """One rule of each kind; creation order puts an expiry and an adoption on page 1 of 3.

    With per_page 1000 (the product's, for the installed command), other hosts' leases fill page 1.
    """
    rules: dict[str, dict[str, Any]] = {}

    def add(name: str, value: str, notes: str, mode: str = "block") -> None:
        target = "ip6" if ":" in value else "ip"
        rules[name] = h.cf.add_rule("zone", ZONE_ID, target, value, mode=mode, notes=notes)

    add("expire_ours", EXPIRE[1], lease("web1"))  # page 1
    add("renew_legacy", RENEW_LEGACY, "Fail2Ban sshd")
    add("other_1", "45.155.206.1", lease("web2"))
    add("other_2", "45.155.206.2", lease("web2"))
    add("join_other", OTHER_BANNED, lease("web2"))
    first = ipaddress.ip_address("46.0.0.1")
    for i in range(per_page - PER_PAGE):
        add(f"other_filler_{i}", str(first + i), lease("web2"))
    add("expire_legacy", EXPIRE[2], "Blocked by fail2ban on 11/20/26 10:00:00 (ASN: AS13335)")  # page 2
    add("renew_stale", RENEW_STALE, lease("web1", jails="recidive"))
    add("other_3", "45.155.206.3", lease("web2"))
    add("other_4", "45.155.206.4", lease("web2"))
    add("expire_v6", EXPIRE[0], lease("web1"))
    add("other_5", "45.155.206.5", lease("web2"))  # page 3
    add("untagged_listed", "45.155.207.2", "partner VPN, exempt from fail2ban", mode="whitelist")
    # Untagged: listed too (no notes filter), and never ours.
    add("untagged_foreign", FOREIGN, "partner office, keep")
    add("untagged_other", "45.155.207.1", "monitoring", mode="whitelist")
    return World(h, rules, per_page)


# --- checks ---------------------------------------------------------------------------------------------


def rule_id(record: RequestRecord) -> str:
    return record.path.rsplit("/", 1)[1]


def check_run(world: World, *, listing_failed: bool) -> None:
    """What no run may ever do, whatever failed: checked on the emulator's log and state."""
    cf, now = world.cf, {r["id"]: r for r in world.cf.rules("zone", ZONE_ID)}
    for name in world.untouchable:
        rule = world.seeded[name]
        assert now.get(rule["id"]) == rule, f"{name} was modified or deleted"
    touched = {rule_id(r) for r in cf.writes() if r.method in ("PATCH", "DELETE")}
    assert touched.isdisjoint(world.ids(*world.untouchable))
    deleted = {rule_id(r) for r in cf.writes() if r.method == "DELETE"}
    assert deleted <= world.expiring, "a rule of a still-banned IP (or not ours) was deleted"
    if listing_failed:
        assert deleted == set(), "an expiry was applied after an incomplete listing"


def check_converged(world: World) -> None:
    """Exactly the desired state: untouchables as seeded, one lease of ours per banned IP, nothing else."""
    by_value = {r["configuration"]["value"]: r for r in world.cf.rules("zone", ZONE_ID)}
    expected = {world.seeded[n]["configuration"]["value"] for n in world.untouchable}
    expected |= {*ADD, RENEW_LEGACY, RENEW_STALE, OTHER_BANNED}
    assert set(by_value) == expected
    joined = parse_note(by_value[OTHER_BANNED]["notes"], TAG)
    assert joined is not None and joined.hosts == ("web1", "web2")
    assert by_value[OTHER_BANNED]["id"] == world.seeded["join_other"]["id"]
    for value in (*ADD, RENEW_LEGACY, RENEW_STALE):
        rule = by_value[value]
        note = parse_note(rule["notes"], TAG)
        assert note is not None and note.kind is NoteKind.LEASE, rule["notes"]
        assert (note.hosts, note.jails, rule["mode"]) == (("web1",), (JAIL,), "block")
        assert note.until is not None and note.since is not None and note.until > note.since
    # Renewals rewrite the rule in place: Cloudflare refuses a second rule for the same IP anyway.
    assert by_value[RENEW_LEGACY]["id"] == world.seeded["renew_legacy"]["id"]
    assert by_value[RENEW_STALE]["id"] == world.seeded["renew_stale"]["id"]


@dataclass(frozen=True)
class Ran:
    """One run, in process or through the command: what it returned and what it told the operator."""

    exit_code: int
    said: str  # stderr, or the log records and the error of an in-process run
    outcome: Outcome | None = None  # in process, when execute returned one


def run_in_process(world: World) -> Ran:
    """run.execute, and what the CLI does with an error it raises (one line, the error's exit code)."""
    session = CountingSession()
    outcome: Outcome | None = None
    raised: ReconcileError | None = None
    with captured_logs() as records:
        try:
            outcome = world.h.execute(per_page=world.per_page, session=session)
        except ReconcileError as exc:
            raised = exc
    session.close()
    wait_for_requests(world.cf, session.sent)  # a delayed request may land after the run ended
    assert not any(r.exc_info for r in records)
    said = "\n".join(r.getMessage() for r in records)
    if raised is not None:
        return Ran(raised.exit_code, f"{said}\n{raised}")
    assert outcome is not None
    if outcome.error is not None:
        said += f"\n{outcome.error}"  # what the CLI logs of an error the run stopped on
    return Ran(outcome.exit_code, said, outcome)


def run_command(world: World) -> Ran:
    result = world.h.run()
    wait_for_requests(world.cf, requests_made(result.stderr))
    return Ran(result.returncode, result.stderr)


def clean_run_converges(world: World) -> None:
    world.cf.clear_log()
    ran = run_in_process(world)
    assert ran.exit_code == 0, ran.said
    check_run(world, listing_failed=False)
    check_converged(world)


# --- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def banned_f2b(f2b_pool: ServerPool) -> Iterator[F2B]:
    with f2b_pool.server() as srv:
        srv.ban(JAIL, *BANNED)
        yield srv


@pytest.fixture(scope="module")
def read_once(banned_f2b: F2B) -> Callable[[Config], Fail2banState]:
    """fail2ban as the in-process runs read it: for real, once per configuration, then that same state.

    The matrix's faults are Cloudflare's; the module server's sshd bans never change, so every real read
    returns the same state, and reading it ~200 times cost ~0.3 s of CPU each (three fail2ban-client
    processes). The runs of the installed command still read fail2ban themselves, every time.
    """
    states: dict[tuple[tuple[str, ...], tuple[str, ...]], Fail2banState] = {}

    def read(config: Config) -> Fail2banState:
        key = (tuple(config.fail2ban.command), tuple(config.fail2ban.jails))
        if key not in states:
            states[key] = read_configured(config)
        return states[key]

    return read


def make_world(
    f2b: F2B,
    cf: CloudflareEmulator,
    tmp_path: Path,
    read: Callable[[Config], Fail2banState],
    per_page: int = PER_PAGE,
) -> Iterator[World]:
    for h in make_harness(f2b, cf, tmp_path):
        h.read = read
        h.config(fail2ban={"jails": [JAIL]}, cloudflare={"retries": RETRIES, "timeout": TIMEOUT})
        yield seed(h, per_page)


@pytest.fixture
def world(banned_f2b: F2B, tmp_path: Path, read_once: Callable[[Config], Fail2banState]) -> Iterator[World]:
    with checked_emulator() as cf:
        yield from make_world(banned_f2b, cf, tmp_path, read_once)


def matrix() -> Iterator[Any]:
    for kind in KINDS:
        variants = ("exhausted", "transient") if kind in RETRIED else ("exhausted",)
        for step in STEPS:
            for variant in variants:
                yield pytest.param(kind, step, variant, id=f"{kind}-{step.replace(' ', '_')}-{variant}")


# --- the matrix -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "step", "variant"), list(matrix()))
def test_fault(
    banned_f2b: F2B,
    tmp_path: Path,
    read_once: Callable[[Config], Fail2banState],
    kind: str,
    step: str,
    variant: str,
) -> None:
    real = (kind, step, variant) in REAL_COMMAND
    # The installed command lists 1000 rules a page, so its later page needs over 1000 rules. Checking
    # the emulator's own 1000-rule answers would take about as long as the client's timeout: only
    # requests are schema-checked there.
    big = real and step == "later page"
    with checked_emulator(validate_responses=not big) as cf:
        for world in make_world(banned_f2b, cf, tmp_path, read_once, 1000 if big else PER_PAGE):
            fault_case(world, kind, step, variant, real)


def fault_case(world: World, kind: str, step: str, variant: str, real: bool) -> None:
    absorbed = variant == "transient"
    # Exhausted: every attempt of the request fails. Faults that are not retried fail the first attempt.
    count = 1 if absorbed or kind not in RETRIED else RETRIES + 1
    no_listing = step == "first page" and not absorbed
    listing_failed = step in ("first page", "later page") and not absorbed
    inject_at(world.cf, kind, step, count, LATE if kind == "late" else DELAY)

    ran = run_command(world) if real else run_in_process(world)
    assert "Traceback" not in ran.said
    assert ran.exit_code == (0 if absorbed else 1), ran.said
    check_run(world, listing_failed=listing_failed)
    if not listing_failed:
        # Said by apply's log line and the command's summary; check_outcome counts it in process.
        assert ": duplicate" not in ran.said and "already covered by a foreign rule" not in ran.said
    if ran.outcome is not None and ran.outcome.plan is not None:
        check_outcome(ran.outcome, step, absorbed, listing_failed)
    else:
        assert no_listing or real, f"the run stopped before planning: {ran.said}"
    faulted = faulted_request(world.cf, step)
    if absorbed:
        assert f"retrying {faulted.method} {faulted.path}" in ran.said
        check_converged(world)  # the retry absorbed it: nothing left for the next run
    else:
        assert f"{faulted.method} {faulted.path}" in ran.said, ran.said
    if no_listing:
        # Not even page 1: Cloudflare is unreachable or refusing, so nothing is planned or written.
        assert world.cf.writes() == []
        assert ran.outcome is None or ran.outcome.plan is None
    if listing_failed and step == "later page":
        assert "page=2" in ran.said and f"incomplete after {world.per_page} rules" in ran.said
        # What page 1 showed is still acted on, except for the expiry there.
        patched = {rule_id(r) for r in world.cf.writes() if r.method == "PATCH" and r.status == 200}
        assert world.seeded["renew_legacy"]["id"] in patched
        assert world.seeded["expire_ours"]["id"] in {r["id"] for r in world.cf.rules("zone", ZONE_ID)}
    clean_run_converges(world)


def check_outcome(outcome: Outcome, step: str, absorbed: bool, listing_failed: bool) -> None:
    plan, applied = outcome.plan, outcome.applied
    assert plan is not None and applied is not None
    assert plan.incomplete == ((ZONE,) if listing_failed else ())
    failed = [o for o in applied.outcomes if o.result is Result.FAILED]
    assert applied.count(Result.PENDING) == 0
    if not listing_failed:
        # Every rule was listed, the foreign one too: no create may end as a duplicate, not even the
        # retry of one whose first answer was lost (it answers 10009 for the rule that attempt stored).
        assert applied.count(Result.DUPLICATE) == 0
    if absorbed or listing_failed:
        assert failed == []
    else:
        # Exactly the faulted change failed; every other change was still made.
        assert [o.change.action for o in failed] == [ACTION[step]]
        assert METHOD[step] in failed[0].detail


def faulted_request(cf: CloudflareEmulator, step: str) -> RequestRecord:
    """The request that took the fault: the first of its method (the page-2 GET for a later page).

    A delayed request is logged once carried out, before its retry (the emulator keeps their order).
    """
    same = [r for r in cf.requests if r.method == METHOD[step]]
    if step == "later page":
        same = [r for r in same if r.query.get("page") == "2"]
    assert same, f"no {METHOD[step]} request was made"
    return same[0]


# --- 429, budget, deadline ------------------------------------------------------------------------------

# Requests before the step in a clean run of the command: 1 listing page (of 1000), then 3 creates (the
# foreign address costs none), 3 renewals (2 renews, 1 join), 3 expiries. The emulator's limit is set so
# that the step's request is the first one over it.
BEFORE_429 = {"first page": 0, "create": 1, "renew": 4, "delete": 7}


def next_window(cf: CloudflareEmulator) -> None:
    """Emulated time moves past the blocked window, and the limit goes back to Cloudflare's."""
    cf.set_clock_offset(cf.window_remaining() + 1)
    cf.rate_limit = 1200


@pytest.mark.parametrize("step", list(BEFORE_429))
def test_429_stops_the_run_at_once(
    banned_f2b: F2B, tmp_path: Path, read_once: Callable[[Config], Fail2banState], step: str
) -> None:
    # No quota headers: with them the pacer stops before the limit instead of meeting the 429.
    with checked_emulator(rate_limit=BEFORE_429[step], rate_headers="none") as cf:
        for h in make_harness(banned_f2b, cf, tmp_path):
            h.read = read_once
            h.config(fail2ban={"jails": [JAIL]}, cloudflare={"retries": RETRIES, "timeout": TIMEOUT})
            world = seed(h)
            result = h.run()
            assert result.returncode == 4, result.stderr
            assert "Traceback" not in result.stderr
            assert cf.rate_limited == 1
            assert cf.requests[-1].status == 429, "a request was sent after the 429"
            assert cf.requests[-1].method == METHOD[step]
            assert len(cf.requests) == BEFORE_429[step] + 1
            assert "rate limited by Cloudflare (retry after " in result.stderr
            if step != "first page":
                assert "pending for the next run" in result.stderr
            check_run(world, listing_failed=False)
            next_window(cf)
            clean_run_converges(world)


def test_429_on_a_later_page_stops_the_run_before_planning(
    banned_f2b: F2B, tmp_path: Path, read_once: Callable[[Config], Fail2banState]
) -> None:
    with checked_emulator(rate_limit=1, rate_headers="none") as cf:
        for h in make_harness(banned_f2b, cf, tmp_path):
            h.read = read_once
            h.config(fail2ban={"jails": [JAIL]}, cloudflare={"retries": RETRIES, "timeout": TIMEOUT})
            world = seed(h)
            outcome = h.execute(per_page=PER_PAGE)
            assert outcome.exit_code == 4 and outcome.plan is None
            assert isinstance(outcome.error, RateLimited) and outcome.error.retry_after
            assert "retry after" in str(outcome.error) and "page=2" in str(outcome.error)
            assert [(r.method, r.query["page"], r.status) for r in cf.requests] == [
                ("GET", "1", 200),
                ("GET", "2", 429),
            ]
            next_window(cf)
            clean_run_converges(world)


def test_budget_exhausted_mid_listing_plans_nothing(world: World) -> None:
    world.h.config(fail2ban={"jails": [JAIL]}, cloudflare={"max_requests_per_run": 2})
    outcome = world.h.execute(per_page=PER_PAGE)
    assert outcome.exit_code == 4 and outcome.plan is None
    assert isinstance(outcome.error, BudgetExhausted)
    assert [r.method for r in world.cf.requests] == ["GET", "GET"]
    world.h.config(fail2ban={"jails": [JAIL]})
    clean_run_converges(world)


def test_budget_goes_to_the_newest_bans_and_later_runs_finish(banned_f2b: F2B, tmp_path: Path) -> None:
    older = [f"91.240.118.{i}" for i in range(10, 16)]
    newer = [f"91.240.119.{i}" for i in range(10, 16)]
    jail = "nginx-limit-req"
    banned_f2b.ban(jail, *older)
    # fail2ban reports ban times to the second: the newer bans start in the next second.
    second = int(time.time())
    while int(time.time()) == second:
        time.sleep(0.01)
    banned_f2b.ban(jail, *newer)
    with checked_emulator() as cf:
        for h in make_harness(banned_f2b, cf, tmp_path):
            h.config(fail2ban={"jails": [jail]}, cloudflare={"max_requests_per_run": 5})
            codes, made = [], []
            for _ in range(3):
                cf.clear_log()
                result = h.run()
                codes.append(result.returncode)
                made.append([w.body["configuration"]["value"] for w in cf.writes() if w.status == 200])
                assert len(cf.requests) <= 5 and "Traceback" not in result.stderr
                if result.returncode == 4:
                    assert "request budget of 5 used up" in result.stderr
                    assert "pending for the next run" in result.stderr
            assert codes == [4, 4, 0]
            assert [len(m) for m in made] == [4, 4, 4]  # one listing request, four creates per run
            assert set(made[0]) < set(newer)  # the budget went to the freshest attackers first
            assert set(made[0] + made[1]) >= set(newer)
            assert set(h.rules()) == set(older + newer)


def test_deadline_stops_the_run_instead_of_waiting(world: World) -> None:
    # 1 request a minute: the second request would start a minute in, long after the 2 s limit.
    config = world.h.config(
        fail2ban={"jails": [JAIL]}, cloudflare={"requests_per_minute": 1}, run={"max_seconds": 2}
    )
    started = time.monotonic()
    result = world.h.run(config=config)
    took = time.monotonic() - started
    assert result.returncode == 4, result.stderr
    assert "time limit of 2 s for this run reached" in result.stderr
    assert "Traceback" not in result.stderr
    # waiting would take a minute; the margin is for a loaded machine's start-up and fail2ban read
    assert took < 30, "the run waited for a request it could not make in time"
    assert len(world.cf.requests) <= 1 and world.cf.writes() == []
    world.h.config(fail2ban={"jails": [JAIL]})
    clean_run_converges(world)
