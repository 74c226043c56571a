"""Renderers for plans and runs: the report table, its JSON form, the one-line summary. Pure."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from reconcile.core import json_text, notes
from reconcile.core.applied import Applied, Result, Written
from reconcile.core.changes import Action, Change, Owner, Plan
from reconcile.core.model import Rule, Scope
from reconcile.core.sanitize import escape_line
from reconcile.core.table import simple as simple_table

HEADERS = ("IP", "jails", "banned since", "ban ends", "Cloudflare rule (id / age / hosts)", "planned action")
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
TOP_NETWORKS = 10
# A report prints each ban's times, and bans share them (fail2ban bans in bursts, restores in bulk):
# formatted once each, not 80,000 times for 40,000 rows.
format_time = functools.lru_cache(maxsize=4096)(notes.format_time)


@dataclass(frozen=True)
class Stats:
    """What the summary line reports besides the plan: requests made and time spent."""

    requests: int
    seconds: float
    rate_limited: int = 0


@dataclass(frozen=True)
class Selection:
    """Which rows the report shows (`--action`, `--jail`); empty sets mean all. Counts cover every row."""

    actions: frozenset[Action] = frozenset()
    jails: frozenset[str] = frozenset()

    @property
    def filters(self) -> bool:
        return bool(self.actions or self.jails)

    def shows(self, change: Change) -> bool:
        if self.actions and change.action not in self.actions:
            return False
        return not self.jails or not self.jails.isdisjoint(change.jails)


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
    if moment.tzinfo is UTC:  # nearly always: bans share their times, each text made once (as format_time)
        return _when_utc(moment)
    return _when_text(moment)


def _when_text(moment: datetime) -> str:
    if moment.year < 1000:  # strftime's %Y does not pad these on every platform: as it writes them
        return moment.strftime("%Y-%m-%d %H:%M:%SZ")
    # The fields %-formatted: a third of strftime's time, twice per row of a 40,000-row report.
    fields = (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)
    return "%04d-%02d-%02d %02d:%02d:%02dZ" % fields  # noqa: UP031


# Keyed by UTC moments only: an equal moment in another zone has other fields, and another text.
_when_utc = functools.lru_cache(maxsize=4096)(_when_text)


def _rule_cell(rule: Rule | None, owner: Owner | None, now: datetime) -> str:
    if rule is None:
        return "-"
    return f"{rule.id[:8]} / {age(rule.created_on, now)} / {owner or '?'}"


def _sorted(changes: Sequence[Change]) -> list[Change]:
    # A scope's text made once per scope object, not once per row (str() of a Scope formats an enum).
    texts: dict[int, str] = {}

    def key(change: Change) -> tuple[int, str, str]:
        scope = change.scope
        text = texts.get(id(scope))
        if text is None:
            text = texts[id(scope)] = str(scope or "")
        return _ROW_ORDER[change.action], text, change.value

    return sorted(changes, key=key)


def _by_change(applied: Applied | None) -> dict[Change, Written]:
    return {o.change: o for o in applied.outcomes} if applied else {}


def _scopes(plan: Plan) -> list[Scope]:
    # Told apart by identity first (a plan holds a scope object or two): a Scope hashes in Python.
    distinct = {id(c.scope): c.scope for c in plan.changes if c.scope is not None}
    return sorted(set(distinct.values()), key=str)


def _network(change: Change, names: Mapping[str, str]) -> str:
    if change.asn is None:
        return "-"
    name = names.get(change.asn)
    return f"{change.asn} {name}" if name else change.asn


def top_networks(
    plan: Plan, names: Mapping[str, str], limit: int = TOP_NETWORKS
) -> list[tuple[str, str, int]]:
    """(AS, name, banned addresses) for the networks with the most banned addresses."""
    banned = {(c.asn, c.value) for c in plan.changes if c.asn is not None and c.ban is not None}
    counted = Counter(asn for asn, _ in banned)
    return [(asn, names.get(asn, ""), n) for asn, n in sorted(counted.items(), key=lambda i: (-i[1], i[0]))][
        :limit
    ]


def _counts_block(plan: Plan) -> str:
    """Counts per action (per zone with several) and per jail: what a 10,000-row report is about."""
    scopes = _scopes(plan)
    lines = [f"actions: {_counts_text(plan.changes)}"]
    if len(scopes) > 1:
        lines += [
            f"  {scope}: {_counts_text([c for c in plan.changes if c.scope == scope])}" for scope in scopes
        ]
    jails = Counter(j for c in plan.changes if c.ban is not None or c.action is Action.SKIP for j in c.jails)
    if jails:
        # fail2ban's jail names, escaped as the rows' are (DESIGN §12).
        lines.append("jails: " + ", ".join(f"{escape_line(jail)} {n}" for jail, n in sorted(jails.items())))
    return "\n".join(lines)


def _counts_text(changes: Collection[Change]) -> str:
    counted = Counter(c.action for c in changes)
    return ", ".join(f"{counted[a]} {a}" for a in Action)


def table(
    plan: Plan,
    now: datetime,
    applied: Applied | None = None,
    *,
    selection: Selection = Selection(),
    names: Mapping[str, str] | None = None,
) -> str:
    outcomes = _by_change(applied)
    names = names or {}
    filtered = selection.filters  # without a filter, no call per row
    several = len(_scopes(plan)) > 1
    with_asn = any(c.asn for c in plan.changes)
    headers = list(HEADERS) + (["AS"] if with_asn else []) + (["zone"] if several else [])
    rows = []
    for change in _sorted(plan.changes):
        if filtered and not selection.shows(change):
            continue
        ban = change.ban
        action = f"{change.action}: {change.reason}"
        if outcomes and change in outcomes and outcomes[change].result is not Result.DONE:
            action += f" [{outcomes[change].result}]"
        row = [
            change.value,
            ",".join(change.jails) or "-",
            _when(ban.since) if ban else "-",
            _when(ban.until, permanent=True) if ban else "-",
            _rule_cell(change.rule, change.owner, now),
            action,
        ]
        if with_asn:
            row.append(_network(change, names))
        if several:
            row.append(change.scope.id[:8] if change.scope else "-")
        # Cells carry other writers' text (host and jail names, reasons, AS names): escaped here (DESIGN §12).
        # isprintable() is False for every character escape_line rewrites: the plain cells skip its regex.
        rows.append([cell if cell.isprintable() else escape_line(cell) for cell in row])
    if not plan.changes:
        return "No bans in fail2ban and no managed rules at Cloudflare: nothing to do."
    parts = [_counts_block(plan)]
    networks = top_networks(plan, names)
    if networks:
        parts.append(
            "top networks:\n"
            + simple_table(["AS", "name", "banned"], [[a, escape_line(name), n] for a, name, n in networks])
        )
    parts.append(simple_table(headers, rows) if rows else "(no row matches the filter)")
    return "\n\n".join(parts)


def _owner_json(owner: Owner | None) -> dict[str, Any] | None:
    return None if owner is None else {"kind": str(owner.kind), "hosts": list(owner.hosts)}


def to_json(
    plan: Plan,
    now: datetime,
    stats: Stats,
    *,
    unsafe: Sequence[str] = (),
    applied: Applied | None = None,
    host_id: str = "",
    selection: Selection = Selection(),
    names: Mapping[str, str] | None = None,
) -> str:
    outcomes = _by_change(applied)
    names = names or {}
    filtered = selection.filters  # without a filter, no call per row
    items: list[str] = []
    # A plan has a scope or two: each one's text made once, not once per row (a fifth of the rows' time).
    last_scope: Scope | None = None
    scope_text: str | None = None
    for change in _sorted(plan.changes):
        if filtered and not selection.shows(change):
            continue
        if change.scope is not last_scope:
            last_scope, scope_text = change.scope, str(change.scope) if change.scope else None
        if change.rule is None and not (outcomes and change in outcomes):
            items.append(_plain_row(change, scope_text, names))
        else:
            items.append(json_text.row(_item(change, scope_text, now, names, outcomes)))
    document = {
        "generated_at": format_time(now),
        "host_id": host_id,
        "counts": {str(a): n for a, n in plan.counts().items()},
        "counts_by_scope": {
            str(scope): {
                str(a): n
                for a, n in Counter(
                    c.action for c in plan.changes if c.scope is scope or c.scope == scope
                ).items()
            }
            for scope in _scopes(plan)
        },
        "top_networks": [{"asn": a, "name": n or None, "banned": c} for a, n, c in top_networks(plan, names)],
        "incomplete_scopes": [str(s) for s in plan.incomplete],
        "unsafe": list(unsafe),
        "api_requests": stats.requests,
        "seconds": round(stats.seconds, 3),
        "changes": items,
    }
    return json_text.dumps_with_rows(document, "changes", encoded=True)


def _item(
    change: Change,
    scope_text: str | None,
    now: datetime,
    names: Mapping[str, str],
    outcomes: Mapping[Change, Written],
) -> dict[str, Any]:
    """One row of the JSON report: the keys and their order are what programs read."""
    item: dict[str, Any] = {
        "ip": change.value,
        "scope": scope_text,
        "action": str(change.action),
        "reason": change.reason,
        "jails": list(change.jails),
        "banned_since": format_time(change.ban.since) if change.ban else None,
        "ban_ends": (format_time(change.ban.until) if change.ban.until else "permanent")
        if change.ban
        else None,
        "rule": None,
        "hosts": list(change.lease.hosts) if change.lease else None,
        "notes": change.notes or None,
        "asn": change.asn,
        "as_name": names.get(change.asn) if change.asn else None,
    }
    if change.rule is not None:
        created = change.rule.created_on
        item["rule"] = {
            "id": change.rule.id,
            "owner": _owner_json(change.owner),
            "created_on": format_time(created) if created else None,
            "age_seconds": int((now - created).total_seconds()) if created else None,
            "mode": change.rule.mode,
            "notes": change.rule.notes,
        }
    if outcomes and change in outcomes:  # a Change hashes every field: not for a report
        item["result"] = str(outcomes[change].result)
        if outcomes[change].detail:
            item["error"] = outcomes[change].detail
    return item


_S = json_text.string
_PLAIN_ROW = (
    '{"ip": %s, "scope": %s, "action": %s, "reason": %s, "jails": %s, "banned_since": %s, "ban_ends": %s, '
    '"rule": null, "hosts": %s, "notes": %s, "asn": %s, "as_name": %s}'
)


_ACTION_JSON = {action: _S(action.value) for action in Action}


def _plain_row(change: Change, scope_text: str | None, names: Mapping[str, str]) -> str:
    """`json_text.row(_item(...))` of a change with no listed rule and no outcome, written directly: the
    bulk of a large report (40,000 adds), where the dict and its encoding were a fifth of the command."""
    ban, lease, asn = change.ban, change.lease, change.asn
    name = names.get(asn) if asn else None
    return _PLAIN_ROW % (
        _S(change.value),
        "null" if scope_text is None else _S(scope_text),
        _ACTION_JSON[change.action],
        _S(change.reason),
        json_text.strings(change.jails),
        # Not the cached format_time: a large report's ban times are nearly all distinct, and a cache miss
        # costs more than the formatting.
        "null" if ban is None else _S(notes.format_time(ban.since)),
        "null" if ban is None else _S(notes.format_time(ban.until) if ban.until else "permanent"),
        "null" if lease is None else json_text.strings(lease.hosts),
        _S(change.notes) if change.notes else "null",
        "null" if asn is None else _S(asn),
        "null" if name is None else _S(name),
    )


def summary_without_plan(stats: Stats) -> str:
    tail = f"{stats.requests} API request{'' if stats.requests == 1 else 's'} in {stats.seconds:.1f} s"
    return tail + (f", {stats.rate_limited} rate-limited" if stats.rate_limited else "")


def _quiet(plan: Plan) -> str:
    counts = plan.counts()
    return f"{counts[Action.KEEP]} kept, {counts[Action.FOREIGN]} foreign, {counts[Action.SKIP]} skipped"


def _would(plan: Plan) -> str:
    counts = plan.counts()
    return ", ".join(f"{counts[a]} to {a}" for a in (Action.ADD, Action.RENEW, Action.EXPIRE))


def _per_zone(plan: Plan, applied: Applied | None) -> str:
    """`; zone 023e105f: 2 added, 1 expired` per zone, with several zones; '' with one."""
    scopes = _scopes(plan)
    if len(scopes) < 2:
        return ""
    parts = []
    for scope in scopes:
        if applied is None:
            counted = Counter(c.action for c in plan.changes if c.scope == scope and c.is_write)
            text = ", ".join(f"{counted[a]} to {a}" for a in _PAST)
        else:
            done = Counter(
                o.change.action
                for o in applied.outcomes
                if o.change.scope == scope and o.result in (Result.DONE, Result.ALREADY)
            )
            text = ", ".join(f"{done[a]} {_PAST[a]}" for a in _PAST)
        parts.append(f"{scope.kind} {scope.id[:8]}: {text}")
    return "; " + "; ".join(parts)


def summary(plan: Plan, stats: Stats, applied: Applied | None = None, *, refused: bool = False) -> str:
    tail = summary_without_plan(stats)
    if applied is None:
        if refused:
            return (
                f"refused as unsafe, nothing changed: it would write {_would(plan)}; {_quiet(plan)}; {tail}"
            )
        return f"report: would write {_would(plan)}; {_quiet(plan)}{_per_zone(plan, None)}; {tail}"
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
    if applied.stopped is not None:
        extra.append(f"stopped early: {applied.stopped}")
    middle = f" ({'; '.join(extra)})" if extra else ""
    return f"{done}{middle}; {_quiet(plan)}{_per_zone(plan, applied)}; {tail}"
