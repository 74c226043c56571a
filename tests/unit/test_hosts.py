"""Several hosts, one rule per address (DESIGN §5): random bans, unbans and runs of 2-4 hosts.

Pure: the real planner and the real apply() against an in-memory Cloudflare zone that, like Cloudflare,
holds one rule per address (a second create answers "duplicate"). Any run may die half-way (after any
number of writes). Checked after every step:
- no rule is ever deleted while some host bans its address and that host's membership was written;
- never two rules for one address;
and after one clean run of every host, in any order: a rule exists exactly for the addresses some host
bans, with exactly those hosts in its set.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from reconcile.cloudflare.rule_writes import Created, apply
from reconcile.core.changes import Action, Policy
from reconcile.core.model import Ban, Rule, RuleListing, Scope, ScopeKind
from reconcile.core.notes import NoteKind, parse_note
from reconcile.core.planner import make_plan
from reconcile.errors import BudgetExhausted

TAG = "Blocked by fail2ban"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
ZONE = Scope(ScopeKind.ZONE, "023e105f4ecef8ad9ca31a8372d0c353")
POOL = ("45.155.205.1", "45.155.205.2", "45.155.205.3", "2a06:4880::1", "2a06:4880::2")
HOSTS = ("web1", "web2", "web3", "web4")


@dataclass
class Zone:
    """An in-memory zone with Cloudflare's one-rule-per-value rule; `deleted` logs (ip, hosts) per DELETE."""

    rules: dict[str, Rule] = field(default_factory=dict)
    deleted: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    next_id: int = 0
    writes_left: int | None = None  # the run dies (budget) when this reaches 0

    def _spend(self) -> None:
        if self.writes_left is not None:
            if self.writes_left <= 0:
                raise BudgetExhausted("the run died half-way")
            self.writes_left -= 1

    def create_rule(self, scope: Scope, target: str, value: str, mode: str, notes: str) -> Created:
        self._spend()
        if any(r.value == value for r in self.rules.values()):
            return Created(None)  # 10009
        self.next_id += 1
        rule = Rule(f"{self.next_id:032x}", scope, target, value, mode, notes, NOW)
        self.rules[rule.id] = rule
        return Created(rule)

    def update_rule(self, scope: Scope, rule_id: str, mode: str, notes: str) -> Rule | None:
        self._spend()
        rule = replace(self.rules[rule_id], mode=mode, notes=notes)  # the planner saw it: it exists
        self.rules[rule_id] = rule
        return rule

    def delete_rule(self, scope: Scope, rule_id: str) -> bool:
        self._spend()
        rule = self.rules.pop(rule_id)
        note = parse_note(rule.notes, TAG)
        self.deleted.append((rule.value, note.hosts if note else ()))
        return True


def hosts_of(rule: Rule) -> tuple[str, ...]:
    note = parse_note(rule.notes, TAG)
    assert note is not None and note.kind is NoteKind.LEASE, rule.notes
    return note.hosts


def run(zone: Zone, host: str, bans: dict[str, datetime | None], die_after: int | None) -> None:
    desired = [
        Ban(ipaddress.ip_address(ip), ("sshd",), NOW - timedelta(minutes=5), until)
        for ip, until in sorted(bans.items())
    ]
    plan = make_plan(desired, [], [RuleListing(ZONE, tuple(zone.rules.values()))], Policy(TAG, host), NOW)
    zone.writes_left = die_after
    try:
        apply(plan, zone, "block")
    finally:
        zone.writes_left = None
    assert not [c for c in plan.changes if c.action is Action.KEEP and "does not fit" in c.reason]


def check_never_two_rules_per_address(zone: Zone) -> None:
    values = [ipaddress.ip_address(r.value) for r in zone.rules.values()]
    assert len(values) == len(set(values))


ENDS = st.one_of(st.none(), st.integers(min_value=1, max_value=48).map(lambda h: NOW + timedelta(hours=h)))
STEP = st.one_of(
    st.tuples(st.just("ban"), st.integers(0, 3), st.sampled_from(POOL), ENDS),
    st.tuples(st.just("unban"), st.integers(0, 3), st.sampled_from(POOL)),
    st.tuples(st.just("run"), st.integers(0, 3), st.one_of(st.none(), st.integers(0, 4))),
)


@settings(max_examples=300, deadline=None)
@given(count=st.integers(2, 4), steps=st.lists(STEP, max_size=40), order=st.randoms(use_true_random=False))
def test_a_block_never_lapses_while_a_host_bans_it(count, steps, order):
    hosts = HOSTS[:count]
    bans: dict[str, dict[str, datetime | None]] = {h: {} for h in hosts}
    zone = Zone()
    for step in steps:
        host = hosts[step[1] % count]
        if step[0] == "ban":
            bans[host][step[2]] = step[3]
        elif step[0] == "unban":
            bans[host].pop(step[2], None)
        else:
            before = len(zone.deleted)
            run(zone, host, bans[host], step[2])
            for ip, members in zone.deleted[before:]:
                banning = {h for h in hosts if ip in bans[h]}
                assert not banning & set(members), f"{host} deleted {ip} while {banning} ban it"
        check_never_two_rules_per_address(zone)

    for host in order.sample(hosts, len(hosts)):
        run(zone, host, bans[host], None)
        check_never_two_rules_per_address(zone)
    wanted = {
        ipaddress.ip_address(ip): tuple(sorted(h for h in hosts if ip in bans[h]))
        for ip in {ip for h in hosts for ip in bans[h]}
    }
    got = {ipaddress.ip_address(r.value): hosts_of(r) for r in zone.rules.values()}
    assert got == wanted


def test_join_then_leave_then_last_leave():
    """The issue's story: web1 and web2 ban one address; web1 unbans (the rule stays), then web2 does."""
    zone = Zone()
    ip, end1, end2 = "45.77.1.1", NOW + timedelta(hours=1), NOW + timedelta(hours=5)
    run(zone, "web1", {ip: end1}, None)
    run(zone, "web2", {ip: end2}, None)
    (rule,) = zone.rules.values()
    note = parse_note(rule.notes, TAG)
    assert note is not None and note.hosts == ("web1", "web2") and note.until == end2
    run(zone, "web1", {}, None)
    (rule,) = zone.rules.values()
    assert hosts_of(rule) == ("web2",) and zone.deleted == []
    run(zone, "web2", {}, None)
    assert zone.rules == {} and zone.deleted == [(ip, ("web2",))]
