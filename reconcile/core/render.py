"""Renderers for plans and runs: the report table, its JSON form, the one-line summary. Pure."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from operator import attrgetter

from reconcile.core import notes
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
_VALUE = attrgetter("value")
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


def sorted_rows(changes: Sequence[Change]) -> list[Change]:
    """The rows in the report's order: by action (_ROW_ORDER), scope, then value; ties as given."""
    # By value first, the key read in C; then gathered, in that order, per (action, scope): sorting on a
    # Python key of three per change cost twice as much. A scope's text made once per scope object.
    texts: dict[int, str] = {}
    groups: dict[tuple[int, str], list[Change]] = {}
    for change in sorted(changes, key=_VALUE):
        scope = change.scope
        text = texts.get(id(scope))
        if text is None:
            text = texts[id(scope)] = str(scope or "")
        key = (_ROW_ORDER[change.action], text)
        group = groups.get(key)
        if group is None:
            groups[key] = [change]
        else:
            group.append(change)
    return [change for key in sorted(groups) for change in groups[key]]


def by_change(applied: Applied | None) -> dict[Change, Written]:
    return {o.change: o for o in applied.outcomes} if applied else {}


def scopes_of(plan: Plan) -> list[Scope]:
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


def _counts_block(plan: Plan, scopes: Sequence[Scope]) -> str:
    """Counts per action (per zone with several) and per jail: what a 10,000-row report is about.
    `scopes`: scopes_of(plan)."""
    lines = [f"actions: {_counts_text(plan.changes)}"]
    if len(scopes) > 1:
        lines += [
            f"  {scope}: {_counts_text([c for c in plan.changes if c.scope == scope])}" for scope in scopes
        ]
    # Counted per jail set first: a plan holds a few, and a change one (a pass per jail name cost more).
    held = Counter(c.jails for c in plan.changes if c.ban is not None or c.action is Action.SKIP)
    jails: Counter[str] = Counter()
    for names, n in held.items():
        for jail in names:
            jails[jail] += n
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
    outcomes = by_change(applied)
    names = names or {}
    filtered = selection.filters  # without a filter, no call per row
    scopes = scopes_of(plan)
    several = len(scopes) > 1
    with_asn = any(c.asn for c in plan.changes)
    headers = list(HEADERS) + (["AS"] if with_asn else []) + (["zone"] if several else [])
    rows = []
    for change in sorted_rows(plan.changes):
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
        rows.append(row)
    if not plan.changes:
        return "No bans in fail2ban and no managed rules at Cloudflare: nothing to do."
    parts = [_counts_block(plan, scopes)]
    networks = top_networks(plan, names)
    if networks:
        parts.append(
            "top networks:\n"
            + simple_table(["AS", "name", "banned"], [[a, escape_line(name), n] for a, name, n in networks])
        )
    parts.append(simple_table(headers, escaped(rows)) if rows else "(no row matches the filter)")
    return "\n\n".join(parts)


def escaped(rows: list[list[str]]) -> list[list[str]]:
    """The rows with every cell escaped (DESIGN §12): cells carry other writers' text (host and jail names,
    reasons, AS names). isprintable() is False for every character escape_line rewrites, so a column whose
    joined text is printable, as nearly every one is, needs nothing: one C call per column, not per cell."""
    if all("".join(column).isprintable() for column in zip(*rows, strict=True)):
        return rows
    return [[cell if cell.isprintable() else escape_line(cell) for cell in row] for row in rows]


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
    scopes = scopes_of(plan)
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
