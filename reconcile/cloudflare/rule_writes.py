"""Apply a plan's writes in order; one failing change never stops the others (DESIGN §5, §6)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from reconcile.core.applied import Applied, Result, Written
from reconcile.core.changes import Action, Change, Membership, Plan
from reconcile.core.model import Rule, Scope, rule_target
from reconcile.errors import BudgetExhausted, CloudflareError, RateLimited, ReconcileError

log = logging.getLogger(__name__)


class RuleWriter(Protocol):
    """What apply needs of rules.Client."""

    def create_rule(self, scope: Scope, target: str, value: str, mode: str, notes: str) -> Created: ...
    def update_rule(self, scope: Scope, rule_id: str, mode: str, notes: str) -> Rule | None: ...
    def delete_rule(self, scope: Scope, rule_id: str) -> bool: ...


def apply(plan: Plan, writer: RuleWriter, mode: str) -> Applied:
    outcomes: list[Written] = []
    writes = plan.writes()
    stopped: ReconcileError | None = None
    for index, change in enumerate(writes):
        try:
            result = _apply_one(change, writer, mode)
        except (RateLimited, BudgetExhausted) as exc:
            stopped = exc
            outcomes.extend(Written(c, Result.PENDING) for c in writes[index:])
            log.warning("stopping early: %s; %d change(s) left for the next run", exc, len(writes) - index)
            break
        except CloudflareError as exc:
            log.error("%s %s failed: %s", change.action, change.value, exc)
            outcomes.append(Written(change, Result.FAILED, str(exc)))
            continue
        log.info(
            "%s %s in %s (%s)%s",
            change.action,
            change.value,
            change.scope,
            change.reason,
            "" if result is Result.DONE else f": {result}",
        )
        outcomes.append(Written(change, result))
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
        if change.membership is Membership.LEAVE:
            return Result.ALREADY  # nothing is left to leave
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


@dataclass(frozen=True)
class Created:
    """What a create came to: `rule` as Cloudflare stored it, or None when it answered 10009 (duplicate)."""

    rule: Rule | None
    # The 10009 came after an attempt of this same POST that got no answer (timeout, reset): that attempt
    # stored the rule, so it is ours and the create is done, not a foreign rule.
    stored_earlier: bool = False

    @property
    def duplicate(self) -> bool:
        """A rule this client did not make already covers the value."""
        return self.rule is None and not self.stored_earlier
