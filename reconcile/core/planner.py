"""The planner: a pure function of (bans, rules, policy, now) -> Plan (DESIGN §5).

Per scope and IP exactly one change: add, keep, renew, expire, foreign or skip. Several hosts share one
rule per IP (its notes carry the host set), so a renewal may also be a *join* (this host adds itself) or
a *leave* (it removes itself and the rule stays for the others). The Plan is plain data; the safety check
(safety.py) and the renderers (render.py) live outside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import NamedTuple

from reconcile.core.addresses import Skip, classifier
from reconcile.core.changes import (
    BLOCKING_MODES,
    Action,
    Change,
    Membership,
    Owner,
    OwnerKind,
    Plan,
    Policy,
    planned,
)
from reconcile.core.collector import collector_paused
from reconcile.core.merge import rule_address
from reconcile.core.model import Ban, BanEntry, IPAddress, Rule, RuleListing, Scope
from reconcile.core.notes import (
    MAX_NOTES,
    Lease,
    Note,
    NoteKind,
    format_note,
    format_time,
    host_set,
    make_lease,
    parse_note,
    plain_note,
)
from reconcile.core.plan_text import banned_in, covered_reason, jail_union, joining, others_than
from reconcile.core.sanitize import hosts_text

# Enum members read once: `Skip.NONE` and the like go through the enum's descriptor (90 ns each in 3.11),
# and the planner tested several per ban and per listed rule (4 % of planning 100,000 bans).
_NO_SKIP, _ADD, _RENEW, _FOREIGN, _KEEP = Skip.NONE, Action.ADD, Action.RENEW, Action.FOREIGN, Action.KEEP
_ALLOW, _UNTAGGED, _UNKNOWN, _HOSTS = OwnerKind.ALLOW, OwnerKind.UNTAGGED, OwnerKind.UNKNOWN, OwnerKind.HOSTS
_LEGACY, _JOIN, _LEAVE = NoteKind.LEGACY, Membership.JOIN, Membership.LEAVE


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
    # Planning allocates several objects per ban and rule, none of them in a reference cycle: the cyclic
    # collector, triggered by every 700 allocations, re-scanned them all and took 40 % of planning
    # 100,000 bans. Reference counting still frees everything; the collector runs again afterwards.
    with collector_paused():
        return _make_plan(bans, invalid, listings, policy, now)


def _make_plan(
    bans: Sequence[Ban],
    invalid: Sequence[BanEntry],
    listings: Sequence[RuleListing],
    policy: Policy,
    now: datetime,
) -> Plan:
    changes = [Change(Action.SKIP, e.value, "not a single IP address", jails=(e.jail,)) for e in invalid]
    # Keyed by the compressed address, the Change's value: a str caches its hash, an IPAddress hashes
    # hex(int) on every lookup (a tenth of planning 100,000 bans).
    desired: dict[str, tuple[Ban, datetime | None]] = {}
    not_desired: dict[str, tuple[Ban, str]] = {}
    skip = classifier(tuple(policy.allowlist), tuple(policy.cloudflare_ranges))
    max_age = policy.max_rule_age
    for ban in bans:
        ip = ban.ip
        value, why = skip.keyed(ip)
        end = ban.until if max_age is None else lease_end(ban, max_age)
        if why is _NO_SKIP and (end is None or end > now):  # nearly every ban: one test first
            desired[value] = (ban, end)
        elif why is Skip.ALLOWLISTED:
            not_desired[value] = (ban, "allowlisted")
        elif why is Skip.CLOUDFLARE:
            not_desired[value] = (ban, "Cloudflare's own address")
        elif end is not None and end <= now:
            # An end other than fail2ban's own is max_rule_age's cap.
            not_desired[value] = (ban, "ban ended" if end == ban.until else "older than max_rule_age")
        else:
            desired[value] = (ban, end)

    managed: dict[Scope, int] = {}
    ruled: set[str] = set()
    for listing in listings:
        scope_changes, count = _plan_scope(listing, desired, not_desired, policy, now)
        managed[listing.scope] = count
        changes.extend(scope_changes)
        if not_desired:  # only they are looked up in it (nearly always none: a pass over every change)
            ruled.update(c.value for c in scope_changes if c.rule is not None and c.ip is not None)
    for value, (ban, reason) in not_desired.items():
        if value not in ruled:
            changes.append(Change(Action.SKIP, value, reason, ban=ban, jails=ban.jails, ip=ban.ip))
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


class _Listed(NamedTuple):
    rule: Rule
    note: Note | None
    owner: Owner


def _plan_scope(
    listing: RuleListing,
    desired: dict[str, tuple[Ban, datetime | None]],
    not_desired: dict[str, tuple[Ban, str]],
    policy: Policy,
    now: datetime,
) -> tuple[list[Change], int]:
    scope = listing.scope
    by_value: dict[str, _Listed] = {}  # by compressed address
    addresses: dict[str, IPAddress] = {}  # parsed rule values no ban explains (their address)
    changes: list[Change] = []
    managed = 0
    # What owner_of depends on -> its Owner: a fleet has a handful, made once each instead of per rule.
    # (Its `managed` with it: a property, read once per rule.)
    owners: dict[tuple[str, NoteKind | None, tuple[str, ...]], tuple[Owner, bool]] = {}
    tag, jails, tagged_only = policy.tag, policy.jails, policy.tagged_only
    for rule in listing.rules:
        note = parse_note(rule.notes, tag, jails=jails, tagged_only=tagged_only)
        key = (rule.mode, None, ()) if note is None else (rule.mode, note.kind, note.hosts)
        known = owners.get(key)
        if known is None:
            made = owner_of(rule, note)
            known = owners[key] = (made, made.managed)
        owner, ours = known
        listed = _tuple(_Listed, (rule, note, owner))
        managed += ours
        value: str | None = rule.value
        if rule.target not in ("ip", "ip6"):
            value = None
        elif value not in desired and value not in not_desired:
            # Not a banned address in compressed form: parse it (it may be one in another spelling).
            address = rule_address(rule)
            if address is None:
                value = None
            else:
                ip, value = address
                addresses.setdefault(value, ip)
        if value is None or value in by_value:
            if ours:  # a tagged rule we cannot map to one IP: never guessed at
                changes.append(
                    Change(
                        Action.KEEP,
                        rule.value,
                        "tagged rule for a non-IP target",
                        scope,
                        None,
                        rule,
                        owner,
                    )
                )
            continue
        by_value[value] = listed

    mine = (policy.host_id,)
    for value, (ban, end) in desired.items():
        found: _Listed | None = by_value.pop(value, None)
        if found is None:
            # _for_banned's add, made directly (half of planning 100,000 bans goes to adds); the same
            # Change, tests/unit/test_plan_speed.py compares. A note that does not fit goes the long way.
            held, since = ban.jails, ban.since
            notes = plain_note(tag, held, mine, since, end)
            if notes is not None:
                lease = make_lease(held, mine, since, end)
                changes.append(planned(_ADD, value, banned_in(held), scope, ban, None, None, lease,
                                       notes, held, ban.ip, None, None))  # fmt: skip
                continue
        changes.append(_for_banned(scope, ban.ip, value, ban, end, found, policy, now))
    texts: dict[int, str] = {}  # each Owner's text (a fleet's rules share a handful)
    for value, listed in by_value.items():
        owner, note = listed.owner, listed.note
        # Another host's live lease, not banned here: nearly every rule a fleet's host lists. Kept as
        # _for_unbanned keeps it, without its steps (tests/unit/test_plan_speed.py compares).
        if (owner.kind is _HOSTS and note and mine[0] not in owner.hosts and value not in not_desired
                and _lease_live(note, now)):  # fmt: skip
            text = texts.get(id(owner))
            if text is None:
                text = texts[id(owner)] = str(owner)
            reason = _others_lease(text, note.until)
            changes.append(planned(_KEEP, value, reason, scope, None, listed.rule, owner, None, "", (),
                                   addresses[value], note.asn, None))  # fmt: skip
            continue
        if not owner.managed:
            continue  # not ours and not banned here: not our business
        former: tuple[Ban | None, str] = not_desired.get(value, (None, "no longer banned"))
        ip = former[0].ip if former[0] is not None else addresses[value]
        change = _for_unbanned(scope, ip, value, listed, *former, policy, now)
        if change.action is Action.EXPIRE and not listing.complete:
            # Never delete on a partial picture: the missing pages might hold what explains this rule.
            change = replace(
                change, action=Action.KEEP, reason="expiry deferred: the rule listing was incomplete"
            )
        changes.append(change)
    return changes, managed


def _lease_live(note: Note, now: datetime) -> bool:
    return note.until is None or note.until > now


def _others_lease(owner: str, until: datetime | None) -> str:
    return f"{owner}'s lease, until {_until_text(until)}"


def _until_text(until: datetime | None) -> str:
    return format_time(until) if until else "permanent"


class _Base(NamedTuple):
    """What every change for one address carries; a tuple, so the planner builds each Change only once
    (dataclasses.replace on a frozen Change cost a third of planning 100,000 bans)."""

    value: str
    scope: Scope
    ban: Ban | None
    rule: Rule | None
    owner: Owner | None
    jails: tuple[str, ...]
    ip: IPAddress
    asn: str | None

    def keep(self, reason: str, action: Action = Action.KEEP) -> Change:
        return planned(
            action, self.value, reason, self.scope, self.ban, self.rule, self.owner, None, "",
            self.jails, self.ip, self.asn, None,
        )  # fmt: skip

    def write(
        self, action: Action, reason: str, lease: Lease, policy: Policy, membership: Membership | None = None
    ) -> Change:
        leave = membership is _LEAVE  # the ban is not this host's any more
        notes = format_note(policy.tag, lease)
        if notes is None:
            # Never a write without the tag (DESIGN §4): the rule stays as it is; a leave ends with the lease.
            return self.keep(
                f"{reason}: not written, the host set does not fit in the {MAX_NOTES}-character note"
            )
        return planned(
            action, self.value, reason, self.scope, None if leave else self.ban, self.rule, self.owner, lease,
            notes, self.jails, self.ip, lease.asn or self.asn, membership,
        )  # fmt: skip


_tuple = tuple.__new__  # a NamedTuple without its __new__ (a Python frame per listed rule): the same


def _for_banned(
    scope: Scope,
    ip: IPAddress,
    value: str,
    ban: Ban,
    end: datetime | None,
    listed: _Listed | None,
    policy: Policy,
    now: datetime,
) -> Change:
    me = policy.host_id
    if listed is None:
        base = _Base(value, scope, ban, None, None, ban.jails, ip, None)
        own = make_lease(ban.jails, (me,), ban.since, end)
        return base.write(Action.ADD, banned_in(ban.jails), own, policy)
    rule, note, owner = listed.rule, listed.note, listed.owner
    base = _tuple(_Base, (value, scope, ban, rule, owner, ban.jails, ip, note.asn if note else None))
    kind = owner.kind
    if kind is _ALLOW:
        return base.keep("an allow rule covers it", _FOREIGN)
    if kind is _UNTAGGED:
        return base.keep("an untagged rule already covers it", _FOREIGN)
    if kind is _UNKNOWN or note is None:
        return base.keep("tagged note of unknown format: kept as is")
    if note.kind is _LEGACY:
        adopted = make_lease(ban.jails, (me,), ban.since, end, note.asn)
        return base.write(_RENEW, "adopting an older script's rule", adopted, policy)
    mode_ok = rule.mode == policy.mode
    if me not in note.hosts:
        if not _lease_live(note, now):
            reason = f"{owner}'s lease ended {_until_text(note.until)}; taken over"
            # optional fields survive a rewrite
            taken = make_lease(ban.jails, (me,), ban.since, end, note.asn, note.cc)
            return base.write(_RENEW, reason, taken, policy, Membership.TAKE_OVER)
        # Join: the rule stays one rule; its lease covers the longest ban of any host.
        joined = make_lease(
            jail_union(note.jails, ban.jails),
            host_set((*note.hosts, me)),
            min(note.since or ban.since, ban.since),
            _later(note.until, end),
            note.asn,
            note.cc,
        )
        return base.write(_RENEW, joining(note.hosts), joined, policy, _JOIN)
    if len(note.hosts) == 1:  # this host alone
        if note.until == end and mode_ok:
            return base.keep("up to date")
        reason = "lease changed" if mode_ok else f"mode {rule.mode} -> {policy.mode}"
        return base.write(
            _RENEW, reason, make_lease(ban.jails, (me,), ban.since, end, note.asn, note.cc), policy
        )
    covered = note.until is None or (end is not None and note.until >= end)
    if covered and mode_ok:
        return base.keep(covered_reason(others_than(note.hosts, me)))
    shared = make_lease(
        jail_union(note.jails, ban.jails),
        note.hosts,
        min(note.since or ban.since, ban.since),
        note.until if covered else end,
        note.asn,
        note.cc,
    )
    reason = "lease extended" if mode_ok else f"mode {rule.mode} -> {policy.mode}"
    return base.write(_RENEW, reason, shared, policy)


def _for_unbanned(
    scope: Scope,
    ip: IPAddress,
    value: str,
    listed: _Listed,
    ban: Ban | None,
    reason: str,
    policy: Policy,
    now: datetime,
) -> Change:
    rule, note, owner, me = listed.rule, listed.note, listed.owner, policy.host_id
    jails = ban.jails if ban else ()
    base = _tuple(_Base, (value, scope, ban, rule, owner, jails, ip, note.asn if note else None))
    if owner.kind is OwnerKind.UNKNOWN or note is None:
        return base.keep("tagged note of unknown format: kept as is")
    if note.kind is NoteKind.LEGACY:
        return base.keep(reason, Action.EXPIRE)
    live = _lease_live(note, now)
    others = others_than(note.hosts, me)
    if me in note.hosts and others and live:
        # Leave: the others still ban it, so the block stays; this host only takes its name off.
        since = note.since or rule.created_on or now
        left = make_lease(note.jails, others, since, note.until, note.asn, note.cc)
        verb = "bans" if len(others) == 1 else "ban"
        return base.write(
            Action.RENEW,
            f"{reason} here; {hosts_text(others)} still {verb} it",
            left,
            policy,
            Membership.LEAVE,
        )
    if me in note.hosts:
        return base.keep(reason if live else f"lease ended {_until_text(note.until)}", Action.EXPIRE)
    if live:
        return base.keep(_others_lease(str(owner), note.until))
    return base.keep(f"{owner}'s lease ended {_until_text(note.until)}", Action.EXPIRE)
