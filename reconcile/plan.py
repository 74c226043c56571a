"""The planner: a pure function of (bans, rules, policy, now) -> Plan (DESIGN §5).

Per scope and IP exactly one change: add, keep, renew, expire, foreign or skip. Several hosts share one
rule per IP (its notes carry the host set), so a renewal may also be a *join* (this host adds itself) or
a *leave* (it removes itself and the rule stays for the others). The Plan is plain data; the safety check
(safety.py) and the renderers (render.py) live outside it.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from reconcile.model import Ban, BanEntry, IPAddress, Rule, RuleListing, Scope, rule_key
from reconcile.notes import Lease, Note, NoteKind, format_note, format_time, host_set, parse_note

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Python 3.11's `is_global` already excludes these; named here so the rule does not depend on that.
DOCUMENTATION = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)
# Only rules that block are ever managed: an allow (`whitelist`) rule is the operator's, whatever its notes.
BLOCKING_MODES = frozenset({"block", "challenge", "js_challenge", "managed_challenge"})


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


class OwnerKind(StrEnum):
    HOSTS = "hosts"  # our lease format: the hosts in `Owner.hosts` ban it
    LEGACY = "legacy"  # an older script's note: adopted by whichever host bans it
    UNKNOWN = "unknown"  # tagged, but a format we do not know: kept, never guessed at
    UNTAGGED = "untagged"  # a blocking rule without our tag: someone else's
    ALLOW = "allow"  # an allow (whitelist) rule: never modified or deleted, whatever its notes


@dataclass(frozen=True)
class Owner:
    """Who a listed rule belongs to: made once here, read by the renderers and the metrics."""

    kind: OwnerKind
    hosts: tuple[str, ...] = ()

    @property
    def managed(self) -> bool:
        return self.kind in (OwnerKind.HOSTS, OwnerKind.LEGACY, OwnerKind.UNKNOWN)

    def label(self, host_id: str) -> str:
        """The metrics label: ours (this host is in the set), others, or the kind."""
        if self.kind is OwnerKind.HOSTS:
            return "ours" if host_id in self.hosts else "others"
        return str(self.kind)

    def __str__(self) -> str:
        return ",".join(self.hosts) if self.kind is OwnerKind.HOSTS else str(self.kind)


@dataclass(frozen=True)
class Policy:
    tag: str
    host_id: str
    mode: str = "block"
    allowlist: tuple[Network, ...] = ()
    max_rule_age: timedelta | None = None
    cloudflare_ranges: tuple[Network, ...] = ()  # skipped as Cloudflare's own (empty: not checked)


@dataclass(frozen=True)
class Change:
    action: Action
    value: str  # the IP in compressed form, or fail2ban's raw entry when it is not an IP
    reason: str
    scope: Scope | None = None
    ban: Ban | None = None  # this host's ban; None for a leave (this host no longer bans it)
    rule: Rule | None = None
    owner: Owner | None = None  # of the rule as listed; None without a rule
    lease: Lease | None = None  # what add / renew write
    notes: str = ""  # `lease` formatted
    jails: tuple[str, ...] = ()
    ip: IPAddress | None = None
    asn: str | None = None  # origin AS of the address, from the written lease or the listed note

    @property
    def is_write(self) -> bool:
        return self.action in WRITE_ORDER

    def write_key(self) -> tuple[int, float, str]:
        newest_first = -self.ban.since.timestamp() if self.ban and self.action is Action.ADD else 0.0
        return WRITE_ORDER[self.action], newest_first, self.value


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    managed: Mapping[Scope, int] = field(default_factory=dict)  # managed rules listed, all hosts together
    incomplete: tuple[Scope, ...] = ()

    def writes(self) -> list[Change]:
        return sorted((c for c in self.changes if c.is_write), key=Change.write_key)

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action is action)

    def counts(self) -> dict[Action, int]:
        return {action: self.count(action) for action in Action}


class _Ranges:
    """Membership in a fixed set of networks by bisection: fast enough to ask for every ban."""

    def __init__(self, networks: Iterable[Network]) -> None:
        self._spans: dict[int, tuple[list[int], list[int]]] = {}
        for version in (4, 6):
            spans = sorted(
                (int(n.network_address), int(n.broadcast_address)) for n in networks if n.version == version
            )
            self._spans[version] = ([s for s, _ in spans], [e for _, e in spans])

    def __contains__(self, ip: IPAddress) -> bool:
        starts, ends = self._spans[ip.version]
        index = bisect.bisect_right(starts, int(ip)) - 1
        return index >= 0 and any(int(ip) <= end for end in ends[: index + 1])


def is_allowlisted(ip: IPAddress, allowlist: Iterable[Network]) -> bool:
    # Multicast is `is_global` for Python yet never a visitor: a block of it means nothing.
    if not ip.is_global or ip.is_multicast or any(ip in net for net in DOCUMENTATION):
        return True
    return any(ip.version == net.version and ip in net for net in allowlist)


def lease_end(ban: Ban, max_rule_age: timedelta | None) -> datetime | None:
    """When the edge block should end: fail2ban's end, capped by max_rule_age (None: permanent)."""
    if max_rule_age is None:
        return ban.until
    capped = ban.since + max_rule_age
    return capped if ban.until is None or capped < ban.until else ban.until


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return None if a is None or b is None else max(a, b)


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
    cloudflare = _Ranges(policy.cloudflare_ranges)
    for ban in bans:
        end = lease_end(ban, policy.max_rule_age)
        if is_allowlisted(ban.ip, policy.allowlist):
            not_desired[ban.ip] = (ban, "allowlisted")
        elif ban.ip in cloudflare:
            not_desired[ban.ip] = (ban, "Cloudflare's own address")
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
        ruled.update(c.ip for c in scope_changes if c.rule is not None and c.ip is not None)
    for ip, (ban, reason) in not_desired.items():
        if ip not in ruled:
            changes.append(Change(Action.SKIP, ip.compressed, reason, ban=ban, jails=ban.jails, ip=ip))
    incomplete = tuple(listing.scope for listing in listings if not listing.complete)
    return Plan(tuple(changes), managed, incomplete)


def owner_of(rule: Rule, note: Note | None) -> Owner:
    if rule.mode not in BLOCKING_MODES:
        return Owner(OwnerKind.ALLOW)
    if note is None:
        return Owner(OwnerKind.UNTAGGED)
    if note.kind is NoteKind.LEASE:
        return Owner(OwnerKind.HOSTS, note.hosts)
    return Owner(OwnerKind.LEGACY if note.kind is NoteKind.LEGACY else OwnerKind.UNKNOWN)


@dataclass(frozen=True)
class _Listed:
    rule: Rule
    note: Note | None
    owner: Owner


def _plan_scope(
    listing: RuleListing,
    desired: dict[IPAddress, tuple[Ban, datetime | None]],
    not_desired: dict[IPAddress, tuple[Ban, str]],
    policy: Policy,
    now: datetime,
) -> tuple[list[Change], int]:
    scope = listing.scope
    by_ip: dict[IPAddress, _Listed] = {}
    changes: list[Change] = []
    managed = 0
    for rule in listing.rules:
        note = parse_note(rule.notes, policy.tag)
        listed = _Listed(rule, note, owner_of(rule, note))
        managed += listed.owner.managed
        ip = _rule_ip(rule)
        if ip is None or ip in by_ip:
            if listed.owner.managed:  # a tagged rule we cannot map to one IP: never guessed at
                changes.append(
                    Change(
                        Action.KEEP,
                        rule.value,
                        "tagged rule for a non-IP target",
                        scope,
                        None,
                        rule,
                        listed.owner,
                    )
                )
            continue
        by_ip[ip] = listed

    for ip, (ban, end) in desired.items():
        changes.append(_for_banned(scope, ip, ban, end, by_ip.pop(ip, None), policy, now))
    for ip, listed in by_ip.items():
        if not listed.owner.managed:
            continue  # not ours and not banned here: not our business
        former: tuple[Ban | None, str] = not_desired.get(ip, (None, "no longer banned"))
        change = _for_unbanned(scope, ip, listed, *former, policy, now)
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


def _lease_live(note: Note, now: datetime) -> bool:
    return note.until is None or note.until > now


def _until_text(until: datetime | None) -> str:
    return format_time(until) if until else "permanent"


def _for_banned(
    scope: Scope,
    ip: IPAddress,
    ban: Ban,
    end: datetime | None,
    listed: _Listed | None,
    policy: Policy,
    now: datetime,
) -> Change:
    value, me = ip.compressed, policy.host_id
    base = Change(Action.KEEP, value, "", scope, ban, jails=ban.jails, ip=ip)
    own = Lease(ban.jails, (me,), ban.since, end)
    if listed is None:
        return _write(base, Action.ADD, f"banned in {', '.join(ban.jails)}", own, policy)
    rule, note, owner = listed.rule, listed.note, listed.owner
    base = replace(base, rule=rule, owner=owner, asn=note.asn if note else None)
    if owner.kind is OwnerKind.ALLOW:
        return replace(base, action=Action.FOREIGN, reason="an allow rule covers it")
    if owner.kind is OwnerKind.UNTAGGED:
        return replace(base, action=Action.FOREIGN, reason="an untagged rule already covers it")
    if owner.kind is OwnerKind.UNKNOWN or note is None:
        return replace(base, reason="tagged note of unknown format: kept as is")
    if note.kind is NoteKind.LEGACY:
        return _write(
            base, Action.RENEW, "adopting an older script's rule", replace(own, asn=note.asn), policy
        )
    carried = replace(own, asn=note.asn, cc=note.cc)  # optional fields survive a rewrite
    others = tuple(h for h in note.hosts if h != me)
    mode_ok = rule.mode == policy.mode
    if me not in note.hosts:
        if not _lease_live(note, now):
            reason = f"{owner}'s lease ended {_until_text(note.until)}; taken over"
            return _write(base, Action.RENEW, reason, carried, policy)
        # Join: the rule stays one rule; its lease covers the longest ban of any host.
        joined = replace(
            carried,
            jails=tuple(sorted({*note.jails, *ban.jails})),
            hosts=host_set((*note.hosts, me)),
            since=min(note.since or ban.since, ban.since),
            until=_later(note.until, end),
        )
        written = _write(base, Action.RENEW, f"joining {owner}", joined, policy)
        if not written.notes:
            return replace(base, reason=f"shared by {owner}; {me} does not fit in the 500-character note")
        return written
    if not others:
        if note.until == end and mode_ok:
            return replace(base, reason="up to date")
        reason = "lease changed" if mode_ok else f"mode {rule.mode} -> {policy.mode}"
        return _write(base, Action.RENEW, reason, carried, policy)
    covered = note.until is None or (end is not None and note.until >= end)
    if covered and mode_ok:
        return replace(base, reason=f"shared with {','.join(others)}; the lease covers this host's ban")
    shared = replace(
        carried,
        jails=tuple(sorted({*note.jails, *ban.jails})),
        hosts=note.hosts,
        since=min(note.since or ban.since, ban.since),
        until=note.until if covered else end,
    )
    reason = "lease extended" if mode_ok else f"mode {rule.mode} -> {policy.mode}"
    return _write(base, Action.RENEW, reason, shared, policy)


def _write(base: Change, action: Action, reason: str, lease: Lease, policy: Policy) -> Change:
    return replace(
        base,
        action=action,
        reason=reason,
        lease=lease,
        notes=format_note(policy.tag, lease) or "",
        asn=lease.asn or base.asn,
    )


def with_networks(plan: Plan, networks: Mapping[IPAddress, tuple[str, str | None]], tag: str) -> Plan:
    """The plan with looked-up origin AS (and country) in every write's lease (DESIGN §10).

    Only writes change: optional fields never cause a write, they fill in when a rule is written anyway.
    A fresh lookup wins over an AS carried over from an older note.
    """
    changes = []
    for change in plan.changes:
        found = networks.get(change.ip) if change.ip is not None and change.lease is not None else None
        if found is not None and change.lease is not None:
            lease = replace(change.lease, asn=found[0], cc=found[1])
            notes = format_note(tag, lease)
            if notes is not None:  # an AS that would not fit is simply not written
                change = replace(change, lease=lease, notes=notes, asn=found[0])
        changes.append(change)
    return replace(plan, changes=tuple(changes))


def _for_unbanned(
    scope: Scope,
    ip: IPAddress,
    listed: _Listed,
    ban: Ban | None,
    reason: str,
    policy: Policy,
    now: datetime,
) -> Change:
    rule, note, owner, me = listed.rule, listed.note, listed.owner, policy.host_id
    base = Change(
        Action.KEEP,
        ip.compressed,
        "",
        scope,
        ban,
        rule,
        owner,
        jails=ban.jails if ban else (),
        ip=ip,
        asn=note.asn if note else None,
    )
    if owner.kind is OwnerKind.UNKNOWN or note is None:
        return replace(base, reason="tagged note of unknown format: kept as is")
    if note.kind is NoteKind.LEGACY:
        return replace(base, action=Action.EXPIRE, reason=reason)
    live = _lease_live(note, now)
    others = tuple(h for h in note.hosts if h != me)
    if me in note.hosts and others and live:
        # Leave: the others still ban it, so the block stays; this host only takes its name off.
        left = Lease(note.jails, others, note.since or rule.created_on or now, note.until, note.asn, note.cc)
        verb = "bans" if len(others) == 1 else "ban"
        leave = _write(base, Action.RENEW, f"{reason} here; {','.join(others)} still {verb} it", left, policy)
        return replace(leave, ban=None)
    if me in note.hosts:
        return replace(
            base, action=Action.EXPIRE, reason=reason if live else f"lease ended {_until_text(note.until)}"
        )
    if live:
        return replace(base, reason=f"{owner}'s lease, until {_until_text(note.until)}")
    return replace(base, action=Action.EXPIRE, reason=f"{owner}'s lease ended {_until_text(note.until)}")
