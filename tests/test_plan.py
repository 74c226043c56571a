"""The planner, table-driven: one (bans, rules) situation per case, the action and reason it must give."""

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconcile.model import Ban, BanEntry, Rule, RuleListing, Scope
from reconcile.notes import format_note
from reconcile.plan import Action, Plan, Policy, make_plan

TAG = "Blocked by fail2ban"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
ZONE = Scope("zone", "023e105f4ecef8ad9ca31a8372d0c353")
ZONE2 = Scope("zone", "9a7806061c88ada191ed06f989cc3dac")
POLICY = Policy(tag=TAG, host_id="web1")
H = timedelta(hours=1)


def ban(ip, jails=("sshd",), since=-1, until=1):
    """since/until in hours relative to NOW; until None = permanent."""
    return Ban(
        ipaddress.ip_address(ip), tuple(jails), NOW + since * H, None if until is None else NOW + until * H
    )


def lease(b, host="web1", policy=POLICY):
    return format_note(TAG, b.jails, host, b.since, b.until)


_ids = iter(range(10**6))


def rule(value, notes, *, target=None, mode="block", scope=ZONE, age_h=2):
    target = target or ("ip6" if ":" in value else "ip")
    return Rule(f"{next(_ids):032x}", scope, target, value, mode, notes, NOW - age_h * H)


def plan_of(bans=(), rules=(), invalid=(), policy=POLICY, complete=True, listings=None) -> Plan:
    listings = listings or [RuleListing(ZONE, tuple(rules), complete)]
    return make_plan(list(bans), list(invalid), listings, policy, NOW)


def only(plan: Plan):
    assert len(plan.changes) == 1, plan.changes
    return plan.changes[0]


B = ban("45.155.205.10")
OTHER_LIVE = format_note(TAG, ["sshd"], "web2", NOW - H, NOW + H)
OTHER_DEAD = format_note(TAG, ["sshd"], "web2", NOW - 3 * H, NOW - H)
OTHER_PERMANENT = format_note(TAG, ["manual"], "web2", NOW - 3 * H, None)

CASES = [
    # id, bans, rules, action, owner, reason fragment
    ("new ban is added", [B], [], Action.ADD, "", "banned in sshd"),
    ("up-to-date rule is kept", [B], [rule("45.155.205.10", lease(B))], Action.KEEP, "ours", "up to date"),
    (
        "changed lease is renewed",
        [B],
        [rule("45.155.205.10", lease(ban("45.155.205.10", until=5)))],
        Action.RENEW,
        "ours",
        "lease changed",
    ),
    (
        "changed jails are renewed",
        [B],
        [rule("45.155.205.10", lease(ban("45.155.205.10", jails=("x",))))],
        Action.RENEW,
        "ours",
        "lease changed",
    ),
    (
        "other mode is renewed",
        [B],
        [rule("45.155.205.10", lease(B), mode="challenge")],
        Action.RENEW,
        "ours",
        "mode challenge -> block",
    ),
    (
        "dated legacy rule is adopted",
        [B],
        [rule("45.155.205.10", "Blocked by fail2ban on 11/21/26 06:03:07 (ASN: AS1)")],
        Action.RENEW,
        "legacy",
        "adopting",
    ),
    (
        "jail legacy rule is adopted",
        [B],
        [rule("45.155.205.10", "Fail2Ban sshd")],
        Action.RENEW,
        "legacy",
        "adopting",
    ),
    (
        "untagged rule is foreign",
        [B],
        [rule("45.155.205.10", "office: Fail2Ban-free zone")],
        Action.FOREIGN,
        "untagged",
        "untagged",
    ),
    (
        "another host's live lease is left alone",
        [B],
        [rule("45.155.205.10", OTHER_LIVE)],
        Action.KEEP,
        "host web2",
        "another host's lease",
    ),
    (
        "another host's permanent lease is left alone",
        [B],
        [rule("45.155.205.10", OTHER_PERMANENT)],
        Action.KEEP,
        "host web2",
        "until permanent",
    ),
    (
        "another host's ended lease is taken over when banned here",
        [B],
        [rule("45.155.205.10", OTHER_DEAD)],
        Action.RENEW,
        "host web2",
        "taken over",
    ),
    (
        "unknown tagged note is kept when banned",
        [B],
        [rule("45.155.205.10", "Blocked by fail2ban by hand")],
        Action.KEEP,
        "unknown",
        "unknown format",
    ),
    (
        "our rule for an unbanned IP expires",
        [],
        [rule("45.155.205.10", lease(B))],
        Action.EXPIRE,
        "ours",
        "no longer banned",
    ),
    (
        "legacy rule for an unbanned IP expires",
        [],
        [rule("45.155.205.10", "Fail2ban")],
        Action.EXPIRE,
        "legacy",
        "no longer banned",
    ),
    (
        "another host's live rule is never touched",
        [],
        [rule("45.155.205.10", OTHER_LIVE)],
        Action.KEEP,
        "host web2",
        "another host's lease",
    ),
    (
        "another host's ended rule expires",
        [],
        [rule("45.155.205.10", OTHER_DEAD)],
        Action.EXPIRE,
        "host web2",
        "lease ended 2026-11-21T11:00:00Z",
    ),
    (
        "unknown tagged note is kept when not banned",
        [],
        [rule("45.155.205.10", "Blocked by fail2ban by hand")],
        Action.KEEP,
        "unknown",
        "unknown format",
    ),
    (
        "IPv6 rule matches whatever the case",
        [ban("2a06:4880::1")],
        [rule("2A06:4880:0:0::1", lease(ban("2a06:4880::1")))],
        Action.KEEP,
        "ours",
        "up to date",
    ),
    ("allowlisted ban is skipped", [ban("10.1.2.3")], [], Action.SKIP, "", "allowlisted"),
    ("documentation range is allowlisted", [ban("203.0.113.5")], [], Action.SKIP, "", "allowlisted"),
    ("IPv6 link-local is allowlisted", [ban("fe80::1")], [], Action.SKIP, "", "allowlisted"),
    (
        "our rule for an allowlisted ban expires",
        [ban("10.1.2.3")],
        [rule("10.1.2.3", lease(ban("10.1.2.3")))],
        Action.EXPIRE,
        "ours",
        "allowlisted",
    ),
    ("ended ban is skipped", [ban("45.155.205.10", until=0)], [], Action.SKIP, "", "ban ended"),
    (
        "tagged rule on a range is kept, never guessed at",
        [],
        [rule("45.155.0.0/16", "Blocked by fail2ban jail=x host=web1 until=permanent", target="ip_range")],
        Action.KEEP,
        "ours",
        "non-IP target",
    ),
]


@pytest.mark.parametrize(
    ("bans", "rules", "action", "owner", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_planner_case(bans, rules, action, owner, reason):
    change = only(plan_of(bans, rules))
    assert change.action is action
    assert change.owner == owner
    assert reason in change.reason


def test_add_and_renew_write_the_lease_note():
    add = only(plan_of([B]))
    assert add.notes == lease(B) and add.scope == ZONE and add.rule is None
    renew = only(plan_of([B], [rule("45.155.205.10", "Fail2Ban sshd")]))
    assert renew.notes == lease(B)


def test_untagged_rule_of_an_unbanned_ip_is_not_in_the_plan():
    assert plan_of([], [rule("45.155.205.10", "partner office")]).changes == ()


def test_invalid_entries_are_skipped_with_their_jail():
    invalid = [BanEntry("recidive", "not_an_ip", NOW, None), BanEntry("recidive", "192.0.2.0/24", NOW, None)]
    plan = plan_of(invalid=invalid)
    assert [(c.action, c.value, c.jails) for c in plan.changes] == [
        (Action.SKIP, "not_an_ip", ("recidive",)),
        (Action.SKIP, "192.0.2.0/24", ("recidive",)),
    ]


def test_configured_allowlist():
    policy = Policy(tag=TAG, host_id="web1", allowlist=(ipaddress.ip_network("45.155.205.0/24"),))
    assert only(plan_of([B], policy=policy)).action is Action.SKIP
    assert only(plan_of([ban("45.155.206.1")], policy=policy)).action is Action.ADD


def test_max_rule_age_caps_the_lease_and_then_expires():
    policy = Policy(tag=TAG, host_id="web1", max_rule_age=timedelta(days=7))
    young = ban("45.155.205.10", since=-24, until=None)
    add = only(plan_of([young], policy=policy))
    assert add.action is Action.ADD and add.notes.endswith("until=2026-11-27T12:00:00Z")
    old = ban("45.155.205.10", since=-8 * 24, until=None)
    assert only(plan_of([old], policy=policy)).reason == "older than max_rule_age"
    expire = only(plan_of([old], [rule("45.155.205.10", lease(old))], policy=policy))
    assert expire.action is Action.EXPIRE and expire.reason == "older than max_rule_age"


def test_incomplete_listing_defers_every_expiry_but_still_adds():
    rules = [rule("45.155.205.10", lease(B)), rule("45.155.205.11", OTHER_DEAD)]
    plan = plan_of([ban("45.155.205.12")], rules, complete=False)
    actions = sorted((c.value, c.action) for c in plan.changes)
    assert actions == [
        ("45.155.205.10", Action.KEEP),
        ("45.155.205.11", Action.KEEP),
        ("45.155.205.12", Action.ADD),
    ]
    assert all("deferred" in c.reason for c in plan.changes if c.action is Action.KEEP)
    assert plan.incomplete == (ZONE,)


def test_write_order_newest_add_first_then_renewals_then_expiries():
    old, new, mid = (
        ban("45.155.205.1", since=-5),
        ban("45.155.205.2", since=-1),
        ban("45.155.205.3", since=-3),
    )
    stale = ban("45.155.205.4")
    rules = [rule("45.155.205.4", "Fail2ban"), rule("45.155.205.5", lease(B))]
    order = [(c.action, c.value) for c in plan_of([old, new, mid, stale], rules).writes()]
    assert order == [
        (Action.ADD, "45.155.205.2"),
        (Action.ADD, "45.155.205.3"),
        (Action.ADD, "45.155.205.1"),
        (Action.RENEW, "45.155.205.4"),
        (Action.EXPIRE, "45.155.205.5"),
    ]


def test_each_zone_is_planned_on_its_own_and_managed_rules_are_counted():
    listings = [
        RuleListing(
            ZONE,
            (
                rule("45.155.205.10", lease(B)),
                rule("45.155.205.20", "Fail2ban"),
                rule("45.155.205.30", "partner"),
            ),
        ),
        RuleListing(ZONE2, ()),
    ]
    plan = plan_of([B], listings=listings)
    by_scope = {(c.scope, c.value): c.action for c in plan.changes}
    assert by_scope == {
        (ZONE, "45.155.205.10"): Action.KEEP,
        (ZONE, "45.155.205.20"): Action.EXPIRE,
        (ZONE2, "45.155.205.10"): Action.ADD,
    }
    assert plan.managed == {ZONE: 2, ZONE2: 0}


def test_allowlisted_ban_with_a_rule_has_one_row_not_two():
    b = ban("10.1.2.3")
    plan = plan_of([b], [rule("10.1.2.3", lease(b))])
    assert [(c.action, c.value) for c in plan.changes] == [(Action.EXPIRE, "10.1.2.3")]


# --- properties: what an operator must be able to rely on, whatever the mix -------------------------------

GLOBAL_V4 = st.integers(min_value=0, max_value=255).map(lambda i: f"45.155.205.{i}")
HOSTS = st.sampled_from(["web1", "web2"])
NOTE_KINDS = st.sampled_from(["ours", "other-live", "other-dead", "legacy", "unknown", "untagged"])


def _notes(kind, b):
    return {
        "ours": lease(b),
        "other-live": OTHER_LIVE,
        "other-dead": OTHER_DEAD,
        "legacy": "Fail2Ban sshd",
        "unknown": "Blocked by fail2ban, by hand",
        "untagged": "partner network",
    }[kind]


@given(
    banned=st.sets(GLOBAL_V4, max_size=15),
    ruled=st.dictionaries(GLOBAL_V4, NOTE_KINDS, max_size=15),
    complete=st.booleans(),
)
def test_properties(banned, ruled, complete):
    bans = [ban(ip) for ip in sorted(banned)]
    rules = [rule(ip, _notes(kind, ban(ip))) for ip, kind in sorted(ruled.items())]
    plan = plan_of(bans, rules, complete=complete)
    by_id = {r.id: r for r in rules}
    for change in plan.writes():
        if change.rule is not None:
            notes = by_id[change.rule.id].notes
            # Never touches a rule it does not own: untagged, unknown-format and live foreign-host rules.
            assert notes not in ("partner network", "Blocked by fail2ban, by hand", OTHER_LIVE)
        if change.action is Action.EXPIRE:
            # Never unbans a banned IP, and never deletes on a partial listing.
            assert change.value not in banned
            assert complete
    # Every banned IP is covered in the zone by exactly one row.
    rows = [c.value for c in plan.changes if c.scope == ZONE]
    assert sorted(set(rows)) == sorted(rows)
    assert banned <= set(rows)
