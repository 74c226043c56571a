"""Safety checks on a plan (DESIGN §6). Pure."""

from __future__ import annotations

from reconcile.errors import UnsafePlan
from reconcile.plan import Action, Plan

# Below this many managed rules in a scope, any share of expiries is allowed: small sets churn naturally.
MIN_MANAGED = 10


def unsafe_reasons(plan: Plan, max_fraction: float) -> list[str]:
    """One sentence per scope whose expiries exceed `max_fraction` of its managed rules."""
    reasons = []
    for scope, managed in plan.managed.items():
        expiring = sum(1 for c in plan.changes if c.action is Action.EXPIRE and c.scope == scope)
        if managed >= MIN_MANAGED and expiring > max_fraction * managed:
            reasons.append(
                f"{scope}: refusing to expire {expiring} of {managed} managed rules "
                f"({expiring / managed:.0%} > {max_fraction:.0%}); run with --force if this is intended"
            )
    return reasons


def raise_if_unsafe(plan: Plan, max_fraction: float, *, force: bool = False) -> None:
    reasons = unsafe_reasons(plan, max_fraction)
    if reasons and not force:
        raise UnsafePlan("; ".join(reasons))
