"""A second read of fail2ban after applying: a ban that arrived during a run reaches the edge in that run.

The stub action starts a run at once (the kick). A ban fail2ban stores after the run read it used to wait
for the timer (up to 2 minutes): a kick that arrives while the run is active is merged into it by systemd
(the oneshot is already running), so no second run follows. After applying, a run that wrote anything
therefore reads fail2ban once more (the same reads) and, when that finds addresses the first read did
not, plans again and sends only the adds for them.

Adds only, and only for values the run's plan did not touch: the listing is the one read before this
run's writes, so renewals, joins and expiries planned from it could undo what was just written, and a
second read that misses a ban must never delete. Whatever else changed waits for the next run, as before.
A list with too little room (its capacity changes would be planned from the first read) waits too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from reconcile.cloudflare.backend import Backend
from reconcile.config import Config
from reconcile.core.applied import Applied
from reconcile.core.changes import Action, Plan, Policy
from reconcile.core.merge import merge
from reconcile.core.model import Ban, Fail2banState, RuleListing
from reconcile.errors import ReconcileError

log = logging.getLogger(__name__)


def catch_up(
    config: Config,
    read: Callable[[Config], Fail2banState],
    backend: Backend,
    first: tuple[Sequence[Ban], Plan, Applied],
    listings: Sequence[RuleListing],
    policy: Policy,
    now: Callable[[], datetime],
    remaining: Callable[[], float],
) -> tuple[Plan, Applied]:
    """`first`'s plan and applied, with the adds for bans that arrived during the run appended to them.

    Call only after a complete apply (nothing stopped it). Unchanged when fail2ban has nothing new, when
    the re-read fails (the next run picks the bans up) or when the run's time is up.
    """
    bans, plan, applied = first
    # Only a run that wrote (a burst is under way, and its kicks were merged into this run) reads again:
    # a run with nothing to write ends within seconds of its read, and the next kick or tick starts anew.
    if not applied.outcomes or remaining() <= 0:
        return plan, applied
    # The first read said what there is to say about fail2ban (time zone, restore): not twice per run.
    quiet = logging.getLogger("reconcile.fail2ban")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        state = read(config)
    except ReconcileError as exc:
        log.warning("fail2ban could not be read again after applying (%s): new bans wait for a run", exc)
        return plan, applied
    finally:
        quiet.setLevel(level)
    again, _ = merge(state.entries)
    seen = {ban.ip for ban in bans}
    if all(ban.ip in seen for ban in again):
        return plan, applied
    second = backend.plan(again, (), listings, policy, now())
    if any(c.capacity is not None for c in second.changes):
        log.info("fail2ban banned more during the run; the list's room is planned by the next run")
        return plan, applied
    touched = {c.value for c in plan.changes}
    adds = tuple(c for c in second.changes if c.action is Action.ADD and c.value not in touched)
    if not adds:
        return plan, applied
    log.info("fail2ban banned %d more address(es) during the run: adding them now", len(adds))
    more = backend.apply(Plan(adds, second.managed))
    return Plan(plan.changes + adds, plan.managed, plan.incomplete), Applied(
        applied.outcomes + more.outcomes, more.stopped
    )
