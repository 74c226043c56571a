"""Retiring this host's IP Access Rules once every zone enforces the list (DESIGN §9), pure: at most the
guard's fraction per run, never a rule for a ban the list has no room for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from fractions import Fraction

from reconcile.cloudflare.list_plan import item_network
from reconcile.core.changes import Action, Capacity, Change, Plan, Policy
from reconcile.core.model import Ban, RuleListing
from reconcile.core.planner import make_plan
from reconcile.core.safety import MIN_MANAGED


def retire(
    plan: Plan,
    bans: Sequence[Ban],
    rules: Sequence[RuleListing],
    policy: Policy,
    now: datetime,
    fraction: float,
) -> Plan:
    """This host's IP Access Rules, once the list is enforced: planned as if it banned there only what the
    list has no room for (those rules stay), never adding a rule; at most `fraction` of a scope's managed
    rules go per run, so the safety guard never has to refuse the list's own sync for them."""
    overflow = {c.ip for c in plan.changes if c.capacity is Capacity.OVER}
    # Without overflow (nearly every run) no ban stays: not a network made per ban to find that out.
    kept = [b for b in bans if item_network(b.ip).network_address in overflow] if overflow else []
    retired = make_plan(kept, [], rules, policy, now)
    changes: list[Change] = []
    for listing in rules:
        managed = retired.managed.get(listing.scope, 0)
        room = len(listing.rules) if managed < MIN_MANAGED else int(Fraction(repr(fraction)) * managed)
        expiring = sorted(
            (c for c in retired.changes if c.scope == listing.scope and c.action is Action.EXPIRE),
            key=lambda c: c.value,
        )
        later = {id(c) for c in expiring[room:]}
        for c in retired.changes:
            if c.scope != listing.scope or c.action is Action.ADD:
                continue
            if id(c) in later:
                c = replace(c, action=Action.KEEP, reason="the list blocks it; the rule goes in a later run")
            changes.append(c)
    return replace(retired, changes=tuple(changes))
