"""cloudflare/rule_writes.py against the emulator (the in-memory writer's cases: tests/unit/test_apply.py)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

from reconcile.cloudflare.credentials import Credentials
from reconcile.cloudflare.pacing import Pacer
from reconcile.cloudflare.rule_writes import apply
from reconcile.cloudflare.rules import Client
from reconcile.core.applied import Result
from reconcile.core.changes import Action, Change, Plan
from reconcile.core.model import Ban, Rule, Scope, ScopeKind
from tests.support.cf_emulator import TOKEN, ZONE_ID, CloudflareEmulator

ZONE = Scope(ScopeKind.ZONE, ZONE_ID)
TAG = "Blocked by fail2ban"
SINCE = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
GONE_ID = "0" * 32  # a rule id the server does not have (any more)


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
    )


def test_renew_404_against_the_emulator(cf: CloudflareEmulator) -> None:
    client = Client(cf.base_url, Credentials(token=TOKEN), pacer=Pacer(1_000_000, 100, 60), timeout=30)
    change = renew("45.155.205.233")
    applied = apply(Plan((change,)), client, "block")
    assert [o.result for o in applied.outcomes] == [Result.DONE]
    assert [(r.method, r.status) for r in cf.requests] == [("PATCH", 404), ("POST", 200)]
    (rule,) = cf.rules()
    assert rule["configuration"] == {"target": "ip", "value": "45.155.205.233"}
    assert (rule["notes"], rule["mode"]) == (change.notes, "block")
