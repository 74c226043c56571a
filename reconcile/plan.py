"""The planner: a pure function of (bans, rules, policy, now) -> Plan (DESIGN §5).

Per scope and IP exactly one change: add, keep, renew, expire, foreign or skip. The Plan is plain data;
the safety check (safety.py) and the renderers (render.py) live outside it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from reconcile.model import Ban, BanEntry, IPAddress, Rule, RuleListing, Scope, rule_key
from reconcile.notes import Note, NoteKind, format_note, format_time, parse_note

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Python 3.11's `is_global` already excludes these; named here so the rule does not depend on that.
DOCUMENTATION = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)


class Action(StrEnum):
    ADD = "add"
    RENEW = "renew"
    EXPIRE = "expire"
    KEEP = "keep"
    FOREIGN = "foreign"
    SKIP = "skip"


# Adds first (blocking attackers is the urgent part), then renewals, then expiries: a run that stops
# early leaves the edge stricter, never looser.
WRITE_ORDER = {Action.ADD: 0, Action.RENEW: 1, Action.EXPIRE: 2}


@dataclass(frozen=True)
class Policy:
    tag: str
    host_id: str
    mode: str = "block"
    allowlist: tuple[Network, ...] = ()
    max_rule_age: timedelta | None = None


@dataclass(frozen=True)
class Change:
    action: Action
    value: str  # the IP in compressed form, or fail2ban's raw entry when it is not an IP
    reason: str
    scope: Scope | None = None
    ban: Ban | None = None
    rule: Rule | None = None
    owner: str = ""  # ours | legacy | host <id> | unknown | untagged
    notes: str = ""  # what add / renew write
    jails: tuple[str, ...] = ()

    @property
    def is_write(self) -> bool:
        return self.action in WRITE_ORDER

    def write_key(self) -> tuple[int, float, str]:
        newest_first = -self.ban.since.timestamp() if self.ban and self.action is Action.ADD else 0.0
        return WRITE_ORDER[self.action], newest_first, self.value


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    managed: dict[Scope, int] = field(default_factory=dict)  # tagged rules listed, all hosts together
    incomplete: tuple[Scope, ...] = ()

    def writes(self) -> list[Change]:
        return sorted((c for c in self.changes if c.is_write), key=Change.write_key)

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action is action)

    def counts(self) -> dict[Action, int]:
        return {action: self.count(action) for action in Action}


def is_allowlisted(ip: IPAddress, allowlist: Iterable[Network]) -> bool:
    if not ip.is_global or any(ip in net for net in DOCUMENTATION):
        return True
    return any(ip.version == net.version and ip in net for net in allowlist)


def lease_end(ban: Ban, max_rule_age: timedelta | None) -> datetime | None:
    """When the edge block should end: fail2ban's end, capped by max_rule_age (None: permanent)."""
    if max_rule_age is None:
        return ban.until
    capped = ban.since + max_rule_age
    return capped if ban.until is None or capped < ban.until else ban.until


def make_plan(
    bans: Sequence[Ban],
    invalid: Sequence[BanEntry],
    listings: Sequence[RuleListing],
    policy: Policy,
    now: datetime,
) -> Plan:
    changes = [Change(Action.SKIP, e.value, "not a single IP address", jails=(e.jail,)) for e in invalid]
    desired: dict[IPAddress, tuple[Ban, datetime | None]] = {}
    not_desired: dict[IPAddress, tuple[Ban, str]] = {}
    for ban in bans:
        end = lease_end(ban, policy.max_rule_age)
        if is_allowlisted(ban.ip, policy.allowlist):
            not_desired[ban.ip] = (ban, "allowlisted")
        elif end is not None and end <= now:
            # An end other than fail2ban's own is max_rule_age's cap.
            not_desired[ban.ip] = (ban, "ban ended" if end == ban.until else "older than max_rule_age")
        else:
            desired[ban.ip] = (ban, end)

    managed: dict[Scope, int] = {}
    ruled: set[IPAddress] = set()
    for listing in listings:
        scope_changes, count = _plan_scope(listing, desired, not_desired, policy, now)
        managed[listing.scope] = count
        changes.extend(scope_changes)
        ruled.update(c.ban.ip for c in scope_changes if c.rule is not None and c.ban is not None)
    for ip, (ban, reason) in not_desired.items():
        if ip not in ruled:
            changes.append(Change(Action.SKIP, ip.compressed, reason, ban=ban, jails=ban.jails))
    incomplete = tuple(listing.scope for listing in listings if not listing.complete)
    return Plan(tuple(changes), managed, incomplete)


def _plan_scope(
    listing: RuleListing,
    desired: dict[IPAddress, tuple[Ban, datetime | None]],
    not_desired: dict[IPAddress, tuple[Ban, str]],
    policy: Policy,
    now: datetime,
) -> tuple[list[Change], int]:
    scope = listing.scope
    by_ip: dict[IPAddress, tuple[Rule, Note | None]] = {}
    changes: list[Change] = []
    managed = 0
    for rule in listing.rules:
        note = parse_note(rule.notes, policy.tag)
        managed += note is not None
        ip = _rule_ip(rule)
        if ip is None or ip in by_ip:
            if note is not None:  # a tagged rule we cannot map to one IP: never guessed at
                changes.append(
                    _keep(scope, rule.value, rule, note, policy, "tagged rule for a non-IP target")
                )
            continue
        by_ip[ip] = (rule, note)

    for ip, (ban, end) in desired.items():
        found = by_ip.pop(ip, None)
        changes.append(_for_banned(scope, ip, ban, end, found, policy, now))
    for ip, (rule, note) in by_ip.items():
        if note is None:
            continue  # untagged and not banned here: not ours, not our business
        former: tuple[Ban | None, str] = not_desired.get(ip, (None, "no longer banned"))
        change = _for_unbanned(scope, ip, rule, note, *former, policy, now)
        if change.action is Action.EXPIRE and not listing.complete:
            # Never delete on a partial picture: the missing pages might hold what explains this rule.
            change = replace(
                change, action=Action.KEEP, reason="expiry deferred: the rule listing was incomplete"
            )
        changes.append(change)
    return changes, managed


def _rule_ip(rule: Rule) -> IPAddress | None:
    if rule.target not in ("ip", "ip6"):
        return None
    try:
        return ipaddress.ip_address(rule_key(rule.target, rule.value)[1])
    except ValueError:
        return None


def owner_of(note: Note | None, host_id: str) -> str:
    if note is None:
        return "untagged"
    if note.kind is NoteKind.LEASE:
        return "ours" if note.host == host_id else f"host {note.host}"
    return note.kind.value  # legacy | unknown


def _is_ours(note: Note, host_id: str) -> bool:
    return note.kind is NoteKind.LEGACY or (note.kind is NoteKind.LEASE and note.host == host_id)


def _lease_live(note: Note, now: datetime) -> bool:
    return note.until is None or note.until > now


def _keep(
    scope: Scope,
    value: str,
    rule: Rule,
    note: Note | None,
    policy: Policy,
    reason: str,
    ban: Ban | None = None,
) -> Change:
    return Change(
        Action.KEEP,
        value,
        reason,
        scope,
        ban,
        rule,
        owner_of(note, policy.host_id),
        jails=ban.jails if ban else (),
    )


def _for_banned(
    scope: Scope,
    ip: IPAddress,
    ban: Ban,
    end: datetime | None,
    found: tuple[Rule, Note | None] | None,
    policy: Policy,
    now: datetime,
) -> Change:
    value = ip.compressed
    notes = format_note(policy.tag, ban.jails, policy.host_id, ban.since, end)
    jails = ", ".join(ban.jails)
    if found is None:
        return Change(Action.ADD, value, f"banned in {jails}", scope, ban, None, "", notes, ban.jails)
    rule, note = found
    owner = owner_of(note, policy.host_id)
    if note is None:
        return Change(
            Action.FOREIGN,
            value,
            "an untagged rule already covers it",
            scope,
            ban,
            rule,
            owner,
            jails=ban.jails,
        )
    if note.kind is NoteKind.UNKNOWN:
        return _keep(scope, value, rule, note, policy, "tagged note of unknown format: kept as is", ban)
    if not _is_ours(note, policy.host_id):
        if _lease_live(note, now):
            return _keep(scope, value, rule, note, policy, _held_by(note), ban)
        reason = f"{owner}'s lease ended; taken over"
    elif rule.notes == notes and rule.mode == policy.mode:
        return _keep(scope, value, rule, note, policy, "up to date", ban)
    else:
        reason = _renew_reason(rule, note, policy)
    return Change(Action.RENEW, value, reason, scope, ban, rule, owner, notes, ban.jails)


def _held_by(note: Note) -> str:
    return f"another host's lease, until {format_time(note.until) if note.until else 'permanent'}"


def _renew_reason(rule: Rule, note: Note, policy: Policy) -> str:
    if note.kind is NoteKind.LEGACY:
        return "adopting an older script's rule"
    if rule.mode != policy.mode:
        return f"mode {rule.mode} -> {policy.mode}"
    return "lease changed"


def _for_unbanned(
    scope: Scope,
    ip: IPAddress,
    rule: Rule,
    note: Note,
    ban: Ban | None,
    reason: str,
    policy: Policy,
    now: datetime,
) -> Change:
    value = ip.compressed
    owner = owner_of(note, policy.host_id)
    if note.kind is NoteKind.UNKNOWN:
        return _keep(scope, value, rule, note, policy, "tagged note of unknown format: kept as is", ban)
    if _is_ours(note, policy.host_id):
        return Change(Action.EXPIRE, value, reason, scope, ban, rule, owner, jails=ban.jails if ban else ())
    if _lease_live(note, now):
        return _keep(scope, value, rule, note, policy, _held_by(note), ban)
    assert note.until is not None
    return Change(
        Action.EXPIRE, value, f"{owner}'s lease ended {format_time(note.until)}", scope, ban, rule, owner
    )
