"""The report as JSON (`--report --format json`): the document programs read, a row per change. Pure.

The keys and their order are the contract (README, DESIGN §7); `json_text` writes the text, and rows without
a listed rule (the bulk of a large report: 40,000 adds) are written directly, held by the unit tests to what
`json_text.row(_item(...))` writes.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from reconcile.core import json_text, notes, render
from reconcile.core.applied import Applied, Written
from reconcile.core.changes import Action, Change, Owner, Plan
from reconcile.core.model import Scope
from reconcile.core.render import Selection, Stats, format_time


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
    outcomes = render.by_change(applied)
    names = names or {}
    filtered = selection.filters  # without a filter, no call per row
    items: list[str] = []
    # A plan has a scope or two: each one's text made once, not once per row (a fifth of the rows' time).
    last_scope: Scope | None = None
    scope_text: str | None = None
    stamp = _stamps()
    for change in render.sorted_rows(plan.changes):
        if filtered and not selection.shows(change):
            continue
        if change.scope is not last_scope:
            last_scope, scope_text = change.scope, str(change.scope) if change.scope else None
        if change.rule is None and not (outcomes and change in outcomes):
            items.append(_plain_row(change, scope_text, names, stamp))
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
            for scope in render.scopes_of(plan)
        },
        "top_networks": [
            {"asn": a, "name": n or None, "banned": c} for a, n, c in render.top_networks(plan, names)
        ],
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


def _stamps() -> Callable[[datetime], str]:
    """format_time's text as JSON, made once per time while one report is written.

    fail2ban's reader makes one object per distinct ban time (fail2ban/parse.py) and bans come in bulk (a
    burst, a restore): 40,000 rows may hold a handful of times, which formatting 80,000 times made half the
    rows' cost. An lru_cache answers a hit in C (a Python lookup per time was a tenth of the rows' cost);
    keyed by the time's value, which is all format_time reads (equal times are one instant, one text).
    A time no other row shares costs one lookup more; the cache goes with the report.
    """
    return functools.lru_cache(maxsize=None)(_stamp)


def _stamp(moment: datetime) -> str:
    return _S(notes.format_time(moment))


_PERMANENT = _S("permanent")


def _plain_row(
    change: Change, scope_text: str | None, names: Mapping[str, str], stamp: Callable[[datetime], str]
) -> str:
    """`json_text.row(_item(...))` of a change with no listed rule and no outcome, written directly: the
    bulk of a large report (40,000 adds), where the dict and its encoding were a fifth of the command.
    `stamp`: a time's JSON text (`_stamps`)."""
    ban, lease, asn = change.ban, change.lease, change.asn
    name = names.get(asn) if asn else None
    return _PLAIN_ROW % (
        _S(change.value),
        "null" if scope_text is None else _S(scope_text),
        _ACTION_JSON[change.action],
        _S(change.reason),
        json_text.strings(change.jails),
        "null" if ban is None else stamp(ban.since),
        "null" if ban is None else _PERMANENT if ban.until is None else stamp(ban.until),
        "null" if lease is None else json_text.strings(lease.hosts),
        _S(change.notes) if change.notes else "null",
        "null" if asn is None else _S(asn),
        "null" if name is None else _S(name),
    )
