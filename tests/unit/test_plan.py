"""The planner, table-driven: one (bans, rules) situation per case, the action and reason it must give."""

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconcile.core.changes import Action, Membership, Plan, Policy
from reconcile.core.model import Ban, BanEntry, Rule, RuleListing, Scope, ScopeKind
from reconcile.core.notes import Lease, format_note, parse_note
from reconcile.core.planner import make_plan

TAG = "Blocked by fail2ban"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
ZONE = Scope(ScopeKind.ZONE, "023e105f4ecef8ad9ca31a8372d0c353")
ZONE2 = Scope(ScopeKind.ZONE, "9a7806061c88ada191ed06f989cc3dac")
POLICY = Policy(tag=TAG, host_id="web1")
H = timedelta(hours=1)


def ban(ip, jails=("sshd",), since=-1, until=1):
    """since/until in hours relative to NOW; until None = permanent."""
    return Ban(
        ipaddress.ip_address(ip), tuple(jails), NOW + since * H, None if until is None else NOW + until * H
    )


def lease(b, host="web1", *, until=..., jails=None, asn=None):
    """The note `host` (a name or a list of names) writes for ban `b`."""
    hosts = (host,) if isinstance(host, str) else tuple(host)
    end = b.until if until is ... else until
    note = format_note(TAG, Lease(tuple(jails or b.jails), hosts, b.since, end, asn=asn))
    assert note is not None
    return note


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
OTHER_LIVE = lease(ban("45.155.205.10", since=-1, until=1), "web2")
OTHER_DEAD = lease(ban("45.155.205.10", since=-3, until=-1), "web2")
OTHER_PERMANENT = lease(ban("45.155.205.10", jails=("manual",), since=-3, until=None), "web2")
SHARED = lease(B, ["web1", "web2"])  # both ban it, the lease ends when B does
SHARED_LONGER = lease(B, ["web1", "web2"], until=NOW + 5 * H)  # web2's ban outlasts ours

CASES = [
    # id, bans, rules, action, owner, reason fragment
    ("new ban is added", [B], [], Action.ADD, "", "banned in sshd"),
    ("up-to-date rule is kept", [B], [rule("45.155.205.10", lease(B))], Action.KEEP, "web1", "up to date"),
    (
        "changed lease is renewed",
        [B],
        [rule("45.155.205.10", lease(ban("45.155.205.10", until=5)))],
        Action.RENEW,
        "web1",
        "lease changed",
    ),
    (
        "jails alone never cause a write",
        [B],
        [rule("45.155.205.10", lease(ban("45.155.205.10", jails=("x",))))],
        Action.KEEP,
        "web1",
        "up to date",
    ),
    (
        "optional fields alone never cause a write",
        [B],
        [rule("45.155.205.10", lease(B, asn="AS24940"))],
        Action.KEEP,
        "web1",
        "up to date",
    ),
    (
        "join: another host's live lease gets this host added",
        [B],
        [rule("45.155.205.10", OTHER_LIVE)],
        Action.RENEW,
        "web2",
        "joining web2",
    ),
    (
        "join a permanent lease",
        [B],
        [rule("45.155.205.10", OTHER_PERMANENT)],
        Action.RENEW,
        "web2",
        "joining web2",
    ),
    (
        "shared lease that covers our ban is kept",
        [B],
        [rule("45.155.205.10", SHARED_LONGER)],
        Action.KEEP,
        "web1,web2",
        "covers this host's ban",
    ),
    (
        "shared lease shorter than our ban is extended",
        [ban("45.155.205.10", until=9)],
        [rule("45.155.205.10", SHARED)],
        Action.RENEW,
        "web1,web2",
        "lease extended",
    ),
    (
        "leave: our ban ended, the other host still bans it",
        [],
        [rule("45.155.205.10", SHARED_LONGER)],
        Action.RENEW,
        "web1,web2",
        "web2 still bans it",
    ),
    (
        "leave when allowlisted here but banned elsewhere",
        [ban("10.1.2.3")],
        [rule("10.1.2.3", lease(ban("10.1.2.3"), ["web1", "web2"]))],
        Action.RENEW,
        "web1,web2",
        "allowlisted here",
    ),
    (
        "another host's live lease for an address allowlisted here is kept",
        [ban("10.1.2.3")],
        [rule("10.1.2.3", lease(ban("10.1.2.3"), "web2"))],
        Action.KEEP,
        "web2",
        "web2's lease",
    ),
    (
        "last host leaves: the rule goes",
        [],
        [rule("45.155.205.10", lease(B))],
        Action.EXPIRE,
        "web1",
        "no longer banned",
    ),
    (
        "shared lease that ended goes even with other hosts listed",
        [],
        [rule("45.155.205.10", lease(ban("45.155.205.10", since=-3, until=-1), ["web1", "web2"]))],
        Action.EXPIRE,
        "web1,web2",
        "lease ended",
    ),
    (
        "allow rule with a fail2ban note is never managed when banned",
        [B],
        [rule("45.155.205.10", "fail2ban office", mode="whitelist")],
        Action.FOREIGN,
        "allow",
        "allow rule",
    ),
    (
        "allow rule with our full lease note is foreign when banned",
        [B],
        [rule("45.155.205.10", lease(B), mode="whitelist")],
        Action.FOREIGN,
        "allow",
        "allow rule",
    ),
    ("multicast is skipped", [ban("224.0.0.1")], [], Action.SKIP, "", "allowlisted"),
    ("IPv6 multicast is skipped", [ban("ff0e::1")], [], Action.SKIP, "", "allowlisted"),
    (
        "other mode is renewed",
        [B],
        [rule("45.155.205.10", lease(B), mode="challenge")],
        Action.RENEW,
        "web1",
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
        "another host's ended lease is taken over when banned here",
        [B],
        [rule("45.155.205.10", OTHER_DEAD)],
        Action.RENEW,
        "web2",
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
        "web1",
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
        "web2",
        "web2's lease, until",
    ),
    (
        "another host's ended rule expires",
        [],
        [rule("45.155.205.10", OTHER_DEAD)],
        Action.EXPIRE,
        "web2",
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
        "web1",
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
        "web1",
        "allowlisted",
    ),
    ("ended ban is skipped", [ban("45.155.205.10", until=0)], [], Action.SKIP, "", "ban ended"),
    (
        "tagged rule on a range is kept, never guessed at",
        [],
        [rule("45.155.0.0/16", "Blocked by fail2ban jail=x host=web1 until=permanent", target="ip_range")],
        Action.KEEP,
        "web1",
        "non-IP target",
    ),
]


@pytest.mark.parametrize(
    ("bans", "rules", "action", "owner", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_planner_case(bans, rules, action, owner, reason):
    change = only(plan_of(bans, rules))
    assert change.action is action
    assert str(change.owner or "") == owner
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
            # Never touches a rule it does not own: untagged and unknown-format rules; another host's live
            # lease only to join it, for an address banned here, keeping that host in the set.
            assert notes not in ("partner network", "Blocked by fail2ban, by hand")
            if notes == OTHER_LIVE:
                assert change.action is Action.RENEW and change.value in banned
                written = parse_note(change.notes, TAG)
                assert written is not None and written.hosts == ("web1", "web2")
        if change.action is Action.EXPIRE:
            # Never unbans a banned IP, and never deletes on a partial listing.
            assert change.value not in banned
            assert complete
    # Every banned IP is covered in the zone by exactly one row.
    rows = [c.value for c in plan.changes if c.scope == ZONE]
    assert sorted(set(rows)) == sorted(rows)
    assert banned <= set(rows)


def test_a_host_that_no_longer_fits_in_the_note_is_not_added_and_says_so():
    crowd = [f"host-{i:03d}-with-a-rather-long-name" for i in range(12)] + ["zz-host-10000"]
    full = lease(B, crowd)
    assert 498 <= len(full) <= 500  # room for no one else, even with the jails cut to "+1"
    change = only(plan_of([B], [rule("45.155.205.10", full)]))
    assert change.action is Action.KEEP and change.notes == ""
    assert "does not fit in the 500-character note" in change.reason


def test_join_keeps_the_other_hosts_and_the_later_end():
    other = lease(B, "web2", until=NOW + 9 * H)
    change = only(plan_of([B], [rule("45.155.205.10", other)]))
    written = parse_note(change.notes, TAG)
    assert change.action is Action.RENEW and written is not None
    assert written.hosts == ("web1", "web2") and written.until == NOW + 9 * H


def test_leave_keeps_the_lease_and_drops_only_this_host():
    shared = lease(B, ["web1", "web2", "web3"], until=NOW + 9 * H)
    change = only(plan_of([], [rule("45.155.205.10", shared)]))
    written = parse_note(change.notes, TAG)
    assert change.action is Action.RENEW and change.ban is None and written is not None
    assert written.hosts == ("web2", "web3") and written.until == NOW + 9 * H


def test_take_over_of_an_ended_lease_writes_this_host_alone():
    ended = lease(ban("45.155.205.10", since=-5, until=-1), ["web2", "web3"])
    change = only(plan_of([B], [rule("45.155.205.10", ended)]))
    written = parse_note(change.notes, TAG)
    assert change.action is Action.RENEW and written is not None
    assert written.hosts == ("web1",) and written.until == B.until


def test_join_leave_and_take_over_are_typed_renewals():
    def planned(bans, notes):
        change = only(plan_of(bans, [rule("45.155.205.10", notes)]))
        assert change.action is Action.RENEW
        return change.membership

    assert planned([B], lease(B, "web2", until=NOW + 9 * H)) is Membership.JOIN
    assert planned([], lease(B, ["web1", "web2"], until=NOW + 9 * H)) is Membership.LEAVE
    assert planned([B], lease(ban("45.155.205.10", since=-5, until=-1), "web2")) is Membership.TAKE_OVER
    assert planned([B], lease(B, "web1", until=NOW + 9 * H)) is None  # its own lease changed
    allowlisted = Policy(tag=TAG, host_id="web1", allowlist=(ipaddress.ip_network("45.155.205.0/24"),))
    shared = rule("45.155.205.10", lease(B, ["web1", "web2"], until=NOW + 9 * H))
    leave = only(plan_of([B], [shared], policy=allowlisted))
    assert leave.membership is Membership.LEAVE and leave.ban is None


def test_cloudflare_ranges_are_skipped_only_when_configured():
    cf = ban("104.16.0.5")
    policy = Policy(tag=TAG, host_id="web1", cloudflare_ranges=(ipaddress.ip_network("104.16.0.0/13"),))
    skipped = only(plan_of([cf], policy=policy))
    assert skipped.action is Action.SKIP and skipped.reason == "Cloudflare's own address"
    assert only(plan_of([cf])).action is Action.ADD
