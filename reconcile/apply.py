"""Apply a plan's writes in order; one failing change never stops the others (DESIGN §5, §6)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from reconcile.errors import BudgetExhausted, CloudflareError, RateLimited, ReconcileError
from reconcile.model import Rule, Scope, rule_target
from reconcile.plan import Action, Change, Plan

if TYPE_CHECKING:  # the client module pulls in requests; the core does not need it to run
    from reconcile.rules import Created

log = logging.getLogger(__name__)


class RuleWriter(Protocol):
    """What apply needs of rules.Client."""

    def create_rule(self, scope: Scope, target: str, value: str, mode: str, notes: str) -> Created: ...
    def update_rule(self, scope: Scope, rule_id: str, mode: str, notes: str) -> Rule | None: ...
    def delete_rule(self, scope: Scope, rule_id: str) -> bool: ...


class Result(StrEnum):
    DONE = "done"
    ALREADY = "already"  # a delete (or a leave) answered 404: the rule was gone already
    DUPLICATE = "duplicate"  # a create answered 10009: a rule not listed as ours covers the IP
    FAILED = "failed"
    PENDING = "pending"  # not attempted: the run stopped first (budget, deadline, 429)


@dataclass(frozen=True)
class Outcome:
    change: Change
    result: Result
    detail: str = ""


@dataclass(frozen=True)
class Applied:
    outcomes: tuple[Outcome, ...]
    stopped: ReconcileError | None = None  # RateLimited or BudgetExhausted

    def count(self, result: Result, action: Action | None = None) -> int:
        return sum(
            1 for o in self.outcomes if o.result is result and (action is None or o.change.action is action)
        )


def apply(plan: Plan, writer: RuleWriter, mode: str) -> Applied:
    outcomes: list[Outcome] = []
    writes = plan.writes()
    stopped: ReconcileError | None = None
    for index, change in enumerate(writes):
        try:
            result = _apply_one(change, writer, mode)
        except (RateLimited, BudgetExhausted) as exc:
            stopped = exc
            outcomes.extend(Outcome(c, Result.PENDING) for c in writes[index:])
            log.warning("stopping early: %s; %d change(s) left for the next run", exc, len(writes) - index)
            break
        except CloudflareError as exc:
            log.error("%s %s failed: %s", change.action, change.value, exc)
            outcomes.append(Outcome(change, Result.FAILED, str(exc)))
            continue
        log.info(
            "%s %s in %s (%s)%s",
            change.action,
            change.value,
            change.scope,
            change.reason,
            "" if result is Result.DONE else f": {result}",
        )
        outcomes.append(Outcome(change, result))
    return Applied(tuple(outcomes), stopped)


def _apply_one(change: Change, writer: RuleWriter, mode: str) -> Result:
    assert change.scope is not None
    if change.action is Action.ADD:
        return _create(change, writer, mode)
    assert change.rule is not None
    if change.action is Action.RENEW:
        if writer.update_rule(change.scope, change.rule.id, mode, change.notes) is not None:
            return Result.DONE
        # 404: the rule was deleted since it was listed (another host expired it, or an operator).
        if change.ban is None:
            return Result.ALREADY  # a leave: nothing is left to leave
        # This host still bans the address: the block must not lapse until the next run (DESIGN §5).
        log.info("%s in %s was deleted meanwhile; creating it again", change.value, change.scope)
        return _create(change, writer, mode)
    if change.action is Action.EXPIRE:
        return Result.DONE if writer.delete_rule(change.scope, change.rule.id) else Result.ALREADY
    raise AssertionError(f"not a write: {change.action}")


def _create(change: Change, writer: RuleWriter, mode: str) -> Result:
    assert change.scope is not None and change.ban is not None
    created = writer.create_rule(change.scope, rule_target(change.ban.ip), change.value, mode, change.notes)
    return Result.DUPLICATE if created.duplicate else Result.DONE
