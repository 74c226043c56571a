"""The seam between a run and where blocks live at the edge (DESIGN §8): one small interface.

A backend lists what is at the edge (as rule listings the planner reads, whatever the resource), plans
with the pure planner (adding its own business before and after: the list backend's /64 items and
capacity), applies a whole plan (as octodns providers' `_apply(plan)`), and says which zones do not
enforce what it wrote. Two implement it: rules.RulesBackend (IP Access Rules) and lists.ListBackend
(an account IP list); tests/fake_backend.py is an in-memory one for unit tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from reconcile.core.applied import Applied
from reconcile.core.changes import Plan, Policy
from reconcile.core.model import Ban, BanEntry, RuleListing


class Backend(Protocol):
    """What a run needs of the edge. `requests` and `rate_limited` count for the summary line."""

    @property
    def requests(self) -> int: ...

    @property
    def rate_limited(self) -> int: ...

    def listings(self) -> list[RuleListing]:
        """Everything at the edge that the plan must see (ours and foreign), one listing per scope."""
        ...

    def plan(
        self,
        bans: Sequence[Ban],
        invalid: Sequence[BanEntry],
        listings: Sequence[RuleListing],
        policy: Policy,
        now: datetime,
    ) -> Plan:
        """plan.make_plan, with whatever the backend must do to its input and output."""
        ...

    def apply(self, plan: Plan) -> Applied:
        """Every write of `plan`; a 429 or the budget stops it (Applied.stopped), the rest is PENDING."""
        ...

    def enforcement(self) -> tuple[str, ...]:
        """One sentence per zone where what was written blocks nobody (and what to do); () when enforced."""
        ...

    def close(self) -> None:
        """Release the HTTP session (the run is over)."""
        ...
