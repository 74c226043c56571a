"""cloudflare/rule_writes.py: each write's result, with an in-memory writer (the emulator's case is in
tests/e2e/test_apply.py)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from reconcile.cloudflare.rule_writes import Created, apply
from reconcile.core.applied import Result
from reconcile.core.changes import Action, Change, Membership, Plan
from reconcile.core.model import Ban, Rule, Scope, ScopeKind
from tests.support.cf_emulator import ZONE_ID

ZONE = Scope(ScopeKind.ZONE, ZONE_ID)
TAG = "Blocked by fail2ban"
SINCE = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
GONE_ID = "0" * 32  # a rule id the server does not have (any more)


@dataclass
class FakeWriter:
    """Rules by id in memory, like Cloudflare: one rule per value, 404 for an unknown id."""

    rules: dict[str, Rule] = field(default_factory=dict)
    calls: list[tuple[str, ...]] = field(default_factory=list)
    lost_answers: set[str] = field(default_factory=set)  # values whose create answer is "lost"

    def create_rule(self, scope: Scope, target: str, value: str, mode: str, notes: str) -> Created:
        self.calls.append(("create", target, value, mode, notes))
        if any(r.value == value for r in self.rules.values()):
            return Created(None, stored_earlier=value in self.lost_answers)
        rule = Rule(f"{len(self.rules) + 1:032x}", scope, target, value, mode, notes)
        self.rules[rule.id] = rule
        return Created(rule)

    def update_rule(self, scope: Scope, rule_id: str, mode: str, notes: str) -> Rule | None:
        self.calls.append(("update", rule_id, mode, notes))
        rule = self.rules.get(rule_id)
        if rule is None:
            return None
        self.rules[rule_id] = Rule(rule.id, scope, rule.target, rule.value, mode, notes)
        return self.rules[rule_id]

    def delete_rule(self, scope: Scope, rule_id: str) -> bool:
        self.calls.append(("delete", rule_id))
        return self.rules.pop(rule_id, None) is not None


def ban(ip: str) -> Ban:
    return Ban(ipaddress.ip_address(ip), ("sshd",), SINCE, SINCE + timedelta(days=1))


def listed(ip: str, rule_id: str = GONE_ID, notes: str = f"{TAG} jail=sshd host=web1") -> Rule:
    target = "ip6" if ":" in ip else "ip"
    return Rule(rule_id, ZONE, target, ip, "block", notes)


def renew(ip: str, *, banned: bool = True, rule_id: str = GONE_ID) -> Change:
    notes = f"{TAG} jail=sshd host=web1 since=2026-11-21T10:00:00Z until=2026-11-22T10:00:00Z"
    return Change(
        Action.RENEW,
        ip,
        "lease changed",
        scope=ZONE,
        ban=ban(ip) if banned else None,
        rule=listed(ip, rule_id),
        notes=notes,
        jails=("sshd",),
        membership=None if banned else Membership.LEAVE,
    )


def add(ip: str) -> Change:
    return Change(
        Action.ADD, ip, "banned in sshd", scope=ZONE, ban=ban(ip), notes=f"{TAG} jail=sshd", jails=("sshd",)
    )


def results(plan: Plan, writer: FakeWriter) -> list[Result]:
    return [o.result for o in apply(plan, writer, "block").outcomes]


def test_renew_of_a_rule_deleted_meanwhile_creates_it_again() -> None:
    writer = FakeWriter()
    change = renew("2a06:4880:1::7")
    assert results(Plan((change,)), writer) == [Result.DONE]
    assert writer.calls == [
        ("update", GONE_ID, "block", change.notes),
        ("create", "ip6", "2a06:4880:1::7", "block", change.notes),
    ]
    (rule,) = writer.rules.values()
    assert (rule.target, rule.value, rule.notes) == ("ip6", "2a06:4880:1::7", change.notes)


def test_a_leave_whose_rule_is_gone_is_already_done() -> None:
    writer = FakeWriter()
    assert results(Plan((renew("45.155.205.233", banned=False),)), writer) == [Result.ALREADY]
    assert [c[0] for c in writer.calls] == ["update"]  # no create for an address this host does not ban
    assert writer.rules == {}


def test_renew_of_an_existing_rule_is_one_update() -> None:
    writer = FakeWriter()
    existing = Rule("1" * 32, ZONE, "ip", "45.155.205.233", "block", "Fail2Ban sshd")
    writer.rules[existing.id] = existing
    assert results(Plan((renew("45.155.205.233", rule_id=existing.id),)), writer) == [Result.DONE]
    assert [c[0] for c in writer.calls] == ["update"]


def test_recreate_that_finds_another_rule_is_a_duplicate() -> None:
    writer = FakeWriter()
    other = Rule("2" * 32, ZONE, "ip", "45.155.205.233", "block", "operator")
    writer.rules[other.id] = other  # someone made a rule for the value after the listing
    assert results(Plan((renew("45.155.205.233"),)), writer) == [Result.DUPLICATE]


def test_create_results_duplicate_and_lost_answer() -> None:
    writer = FakeWriter(lost_answers={"45.155.205.2"})
    for value in ("45.155.205.1", "45.155.205.2"):
        writer.rules[value] = Rule(value, ZONE, "ip", value, "block", "")
    plan = Plan((add("45.155.205.1"), add("45.155.205.2"), add("45.155.205.3")))
    assert results(plan, writer) == [Result.DUPLICATE, Result.DONE, Result.DONE]
