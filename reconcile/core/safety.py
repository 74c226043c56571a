"""Safety checks on a plan (DESIGN §6). Pure."""

from __future__ import annotations

from fractions import Fraction

from reconcile.core.changes import Action, Plan

# Below this many managed rules in a scope, any share of expiries is allowed: small sets churn naturally.
MIN_MANAGED = 10


def unsafe_reasons(plan: Plan, max_fraction: float) -> list[str]:
    """One sentence per scope whose deletes exceed `max_fraction` of its managed rules.

    Only deletes count: a host leaving a shared rule (a renewal) unblocks nobody. Compared in integers
    (the fraction as the decimal the operator wrote), so 63 of 90 at 0.7 is exactly at the limit, allowed.
    """
    limit = Fraction(repr(max_fraction))
    reasons = []
    for scope, managed in plan.managed.items():
        expiring = sum(1 for c in plan.changes if c.action is Action.EXPIRE and c.scope == scope)
        if managed >= MIN_MANAGED and expiring > limit * managed:
            # The counts and the exact limit, not rounded percentages: 7 of 23 at 0.3 read "(30% > 30%)".
            reasons.append(
                f"{scope}: refusing to expire {expiring} of {managed} managed rules, more than "
                f"{float(limit * 100):g}% of {managed} ({float(limit * managed):g}); "
                "run with --force if this is intended"
            )
    return reasons
