"""Renderers for plans and runs: the report table, its JSON form, the one-line summary. Pure."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any

from tabulate import tabulate

from reconcile.apply import Applied, Outcome, Result
from reconcile.model import Rule
from reconcile.notes import format_time
from reconcile.plan import Action, Change, Plan

HEADERS = ("IP", "jails", "banned since", "ban ends", "Cloudflare rule (id / age / owner)", "planned action")
# Rows sorted by what matters to an operator first: writes, then anomalies, then the quiet rest.
_ROW_ORDER = {
    Action.ADD: 0,
    Action.RENEW: 1,
    Action.EXPIRE: 2,
    Action.FOREIGN: 3,
    Action.SKIP: 4,
    Action.KEEP: 5,
}
_PAST = {Action.ADD: "added", Action.RENEW: "renewed", Action.EXPIRE: "expired"}
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


@dataclass(frozen=True)
class Stats:
    """What the summary line reports besides the plan: requests made and time spent."""

    requests: int
    seconds: float
    rate_limited: int = 0


def age(since: datetime | None, now: datetime) -> str:
    if since is None:
        return "?"
    seconds = max(0, int((now - since).total_seconds()))
    # The two largest units that apply: 2d4h, 3h, 5m12s, 40s.
    for (unit, size), (small_unit, small_size) in pairwise(_UNITS):
        if seconds >= size:
            big, small = seconds // size, seconds % size // small_size
            return f"{big}{unit}{small}{small_unit}" if small else f"{big}{unit}"
    return f"{seconds}s"


def _when(moment: datetime | None, permanent: bool = False) -> str:
    if moment is None:
        return "permanent" if permanent else "-"
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _rule_cell(rule: Rule | None, owner: str, now: datetime) -> str:
    if rule is None:
        return "-"
    return f"{rule.id[:8]} / {age(rule.created_on, now)} / {owner}"


def _sorted(changes: Sequence[Change]) -> list[Change]:
    return sorted(changes, key=lambda c: (_ROW_ORDER[c.action], str(c.scope or ""), c.value))


def _by_change(applied: Applied | None) -> dict[Change, Outcome]:
    return {o.change: o for o in applied.outcomes} if applied else {}


def table(plan: Plan, now: datetime, applied: Applied | None = None) -> str:
    outcomes = _by_change(applied)
    scopes = {c.scope for c in plan.changes if c.scope is not None}
    headers = list(HEADERS) + (["scope"] if len(scopes) > 1 else [])
    rows = []
    for change in _sorted(plan.changes):
        ban = change.ban
        action = f"{change.action}: {change.reason}"
        if change in outcomes and outcomes[change].result is not Result.DONE:
            action += f" [{outcomes[change].result}]"
        row = [
            change.value,
            ",".join(change.jails) or "-",
            _when(ban.since) if ban else "-",
            _when(ban.until, permanent=True) if ban else "-",
            _rule_cell(change.rule, change.owner, now),
            action,
        ]
        if len(scopes) > 1:
            row.append(str(change.scope or "-"))
        rows.append(row)
    if not rows:
        return "No bans in fail2ban and no managed rules at Cloudflare: nothing to do."
    return tabulate(rows, headers=headers, tablefmt="simple")


def to_json(
    plan: Plan,
    now: datetime,
    stats: Stats,
    *,
    unsafe: Sequence[str] = (),
    applied: Applied | None = None,
    host_id: str = "",
) -> str:
    outcomes = _by_change(applied)
    items: list[dict[str, Any]] = []
    for change in _sorted(plan.changes):
        item: dict[str, Any] = {
            "ip": change.value,
            "scope": str(change.scope) if change.scope else None,
            "action": str(change.action),
            "reason": change.reason,
            "jails": list(change.jails),
            "banned_since": format_time(change.ban.since) if change.ban else None,
            "ban_ends": (format_time(change.ban.until) if change.ban.until else "permanent")
            if change.ban
            else None,
            "rule": None,
            "notes": change.notes or None,
        }
        if change.rule is not None:
            created = change.rule.created_on
            item["rule"] = {
                "id": change.rule.id,
                "owner": change.owner,
                "created_on": format_time(created) if created else None,
                "age_seconds": int((now - created).total_seconds()) if created else None,
                "mode": change.rule.mode,
                "notes": change.rule.notes,
            }
        if change in outcomes:
            item["result"] = str(outcomes[change].result)
            if outcomes[change].detail:
                item["error"] = outcomes[change].detail
        items.append(item)
    document = {
        "generated_at": format_time(now),
        "host_id": host_id,
        "counts": {str(a): n for a, n in plan.counts().items()},
        "incomplete_scopes": [str(s) for s in plan.incomplete],
        "unsafe": list(unsafe),
        "api_requests": stats.requests,
        "seconds": round(stats.seconds, 3),
        "changes": items,
    }
    return json.dumps(document, indent=2)


def summary_without_plan(stats: Stats) -> str:
    tail = f"{stats.requests} API request{'' if stats.requests == 1 else 's'} in {stats.seconds:.1f} s"
    return tail + (f", {stats.rate_limited} rate-limited" if stats.rate_limited else "")


def summary(plan: Plan, stats: Stats, applied: Applied | None = None) -> str:
    counts = plan.counts()
    quiet = f"{counts[Action.KEEP]} kept, {counts[Action.FOREIGN]} foreign, {counts[Action.SKIP]} skipped"
    tail = summary_without_plan(stats)
    if applied is None:
        writes = ", ".join(f"{counts[a]} to {a}" for a in (Action.ADD, Action.RENEW, Action.EXPIRE))
        return f"report: would write {writes}; {quiet}; {tail}"
    done = ", ".join(
        # A delete that found the rule gone already is as good as done.
        f"{applied.count(Result.DONE, a) + applied.count(Result.ALREADY, a)} {_PAST[a]}"
        for a in (Action.ADD, Action.RENEW, Action.EXPIRE)
    )
    extra = []
    if applied.count(Result.DUPLICATE):
        extra.append(f"{applied.count(Result.DUPLICATE)} already covered by a foreign rule")
    if applied.count(Result.FAILED):
        extra.append(f"{applied.count(Result.FAILED)} failed")
    if applied.count(Result.PENDING):
        extra.append(f"{applied.count(Result.PENDING)} pending for the next run")
    middle = f" ({', '.join(extra)})" if extra else ""
    return f"{done}{middle}; {quiet}; {tail}"
