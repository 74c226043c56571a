"""What applying a plan came to (DESIGN §6): each write's result, and what stopped the run early. Plain data
for the exit code, the renderers and the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from reconcile.core.changes import Action, Change
from reconcile.errors import ReconcileError


class Result(StrEnum):
    DONE = "done"
    ALREADY = "already"  # a delete (or a leave) answered 404: the rule was gone already
    DUPLICATE = "duplicate"  # a create answered 10009: a rule not listed as ours covers the IP
    FAILED = "failed"
    PENDING = "pending"  # not attempted: the run stopped first (budget, deadline, 429)


@dataclass(frozen=True)
class Written:
    change: Change
    result: Result
    detail: str = ""


@dataclass(frozen=True)
class Applied:
    outcomes: tuple[Written, ...]
    stopped: ReconcileError | None = None  # RateLimited or BudgetExhausted

    def count(self, result: Result, action: Action | None = None) -> int:
        return sum(
            1 for o in self.outcomes if o.result is result and (action is None or o.change.action is action)
        )
