"""The list backend's own planning, pure (DESIGN §9): items read as rules, IPv6 bans as their /64 items, bans
a foreign item already covers, and the plan fitted into the list's room.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

from reconcile.cloudflare.answers import timestamp
from reconcile.core.addresses import is_allowlisted
from reconcile.core.changes import Action, Capacity, Change, Membership, OwnerKind, Plan, Policy
from reconcile.core.merge import is_dotted_quad
from reconcile.core.model import Ban, IPAddress, Network, Rule, Scope
from reconcile.core.notes import parse_note
from reconcile.core.planner import owner_of
from reconcile.core.safety import MIN_MANAGED
from reconcile.errors import CloudflareError

IPV6_PREFIX = 64  # Cloudflare takes IPv6 only as prefixes of /64 or shorter


def item_network(ip: IPAddress) -> Network:
    """The item that blocks `ip`: the address itself (IPv4) or its /64 (IPv6)."""
    if ip.version == 4:
        return ipaddress.IPv4Network(ip)
    return ipaddress.IPv6Network(f"{ip}/{IPV6_PREFIX}", strict=False)


def item_covers(item: Rule, ip: IPAddress) -> bool:
    """A list item (read as a rule: an address, an IPv6 /64 as `ip6`, or a range) blocks `ip`."""
    value = f"{item.value}/{IPV6_PREFIX}" if item.target == "ip6" else item.value
    try:
        return ip in ipaddress.ip_network(value, strict=False)
    except (ValueError, TypeError):
        return False


def group_bans(bans: Sequence[Ban], allowlist: Sequence[Network] = ()) -> tuple[list[Ban], set[IPAddress]]:
    """IPv6 bans merged per /64 (keyed by the network address), and the set of those keys.

    The /64's ban spans its addresses: jails united, the earliest start, the latest end (permanent wins).
    An allowlisted address stays on its own, so the planner skips it as always; a /64 never covers one.
    """
    out: list[Ban] = []
    groups: dict[IPAddress, list[Ban]] = {}
    for ban in bans:
        if ban.ip.version == 4 or is_allowlisted(ban.ip, allowlist):
            out.append(ban)
        else:
            groups.setdefault(item_network(ban.ip).network_address, []).append(ban)
    for key, members in groups.items():
        ends = [m.until for m in members]
        out.append(
            Ban(
                ip=key,
                jails=tuple(sorted({j for m in members for j in m.jails})),
                since=min(m.since for m in members),
                until=None if None in ends else max(e for e in ends if e is not None),
            )
        )
    return out, set(groups)


def item_ip(change: Change) -> str:
    """The `ip` a write sends: the address (IPv4) or its /64."""
    assert change.ip is not None
    return str(item_network(change.ip)) if change.ip.version == 6 else change.ip.compressed


def label_networks(plan: Plan, groups: set[IPAddress]) -> Plan:
    """The /64 items named as such in the report (`2a06:4880:1:2::/64`), not as their first address."""
    changes = []
    for c in plan.changes:
        if c.ip is not None and c.ip.version == 6 and (c.ip in groups or (c.rule and c.rule.target == "ip6")):
            c = replace(c, value=str(item_network(c.ip)))
        changes.append(c)
    return replace(plan, changes=tuple(changes))


def spare_allowlisted(plan: Plan, allowlist: Sequence[Network]) -> Plan:
    """No /64 is written that would block an allowlisted address inside it: its ban is skipped instead
    (an item listed already is kept as it is, not renewed)."""
    if not any(net.version == 6 for net in allowlist):
        return plan
    changes = []
    for c in plan.changes:
        # A leave is no ban of this host's: the others' block stays as it is.
        writes = c.action in (Action.ADD, Action.RENEW) and c.membership is not Membership.LEAVE
        if writes and c.ip is not None and c.ip.version == 6:
            mine = item_network(c.ip)
            inside = next((n for n in allowlist if n.version == 6 and n.overlaps(mine)), None)
            if inside is not None:
                reason = f"its /64 holds allowlisted {inside}"
                c = replace(c, action=Action.SKIP if c.rule is None else Action.KEEP, reason=reason)
                c = replace(c, lease=None, notes="", membership=None)
        changes.append(c)
    return replace(plan, changes=tuple(changes))


def foreign_cover(plan: Plan, rules: Sequence[Rule], policy: Policy) -> Plan:
    """An add that a foreign wider CIDR item already covers is foreign: an upsert must never shadow it."""
    foreign = []
    for rule in rules:
        if rule.target != "ip_range":  # asked first: parsing every item's note for this cost 0.1 s per run
            continue
        note = parse_note(rule.notes, policy.tag, jails=policy.jails, tagged_only=policy.tagged_only)
        if not owner_of(rule, note).managed:
            foreign.append(ipaddress.ip_network(rule.value))
    if not foreign:
        return plan
    changes = []
    for c in plan.changes:
        if c.action is Action.ADD and c.ip is not None:
            mine = item_network(c.ip)
            cover = next((n for n in foreign if n.version == mine.version and mine.subnet_of(n)), None)  # type: ignore[arg-type]
            if cover is not None:
                c = replace(c, action=Action.FOREIGN, reason=f"an untagged item {cover} covers it", notes="")
                c = replace(c, lease=None)
        changes.append(c)
    return replace(plan, changes=tuple(changes))


@dataclass(frozen=True)
class Fitted:
    plan: Plan
    expiries_first: bool  # at capacity the expiries must make room before the adds are sent


def fit_capacity(
    plan: Plan, listed: int, capacity: int, host_id: str, max_fraction: float | None = None
) -> Fitted:
    """The plan within `capacity` items (DESIGN §9), `listed` being every item in the list now.

    Newest bans win: an add that finds no room takes the place of this host's own item (host set {H})
    with the oldest ban, if that ban is older; otherwise it is `skip: over list capacity`. Items of other
    hosts and foreign items are never pushed out, and a list already over capacity is not shrunk. With
    `max_fraction` (the expiry guard's), a run expires at most that share of the managed items, its own
    expiries included: a burst into a full list gets in over a few runs instead of being refused (exit 3).
    """
    adds = sorted((c for c in plan.changes if c.action is Action.ADD), key=lambda c: _since(c), reverse=True)
    free = capacity - listed + plan.count(Action.EXPIRE)
    if len(adds) <= free:
        return Fitted(plan, expiries_first=False)
    evictable = sorted(
        (
            c
            for c in plan.changes
            if c.action in (Action.KEEP, Action.RENEW)
            and c.ban is not None
            and c.rule is not None
            and c.owner is not None
            and c.owner.kind is OwnerKind.HOSTS
            and c.owner.hosts == (host_id,)
        ),
        key=_since,
    )
    replaced: dict[Change, Change] = {}
    evicted, budget = 0, _eviction_budget(plan, max_fraction)
    for add in adds:
        if free > 0:
            free -= 1
            continue
        oldest = evictable[evicted] if evicted < len(evictable) else None
        if free == 0 and oldest is not None and _since(oldest) < _since(add) and evicted < budget:
            evicted += 1
            replaced[oldest] = replace(
                oldest,
                action=Action.EXPIRE,
                reason=f"{OVER_CAPACITY}: among the oldest bans, a newer ban takes its place",
                lease=None,
                notes="",
                capacity=Capacity.EVICTED,
            )
            continue
        replaced[add] = replace(
            add, action=Action.SKIP, reason=OVER_CAPACITY, lease=None, notes="", capacity=Capacity.OVER
        )
    changes = tuple(replaced.get(c, c) for c in plan.changes)
    return Fitted(replace(plan, changes=changes), expiries_first=True)


def _eviction_budget(plan: Plan, max_fraction: float | None) -> int | float:
    """How many items may go to make room without tripping the expiry guard (core.safety): its share of
    the managed items, less the run's own expiries; unlimited without a guard or below its minimum."""
    managed = sum(plan.managed.values())
    if max_fraction is None or managed < MIN_MANAGED:
        return math.inf
    allowed = math.floor(Fraction(repr(max_fraction)) * managed)
    return max(0, allowed - plan.count(Action.EXPIRE))


def _since(change: Change) -> float:
    return change.ban.since.timestamp() if change.ban is not None else 0.0


# The reason shown for a ban the list has no room for (DESIGN §9); code asks Change.capacity instead.
OVER_CAPACITY = "over list capacity"


def item_rule(item: dict[str, Any], scope: Scope, mode: str, shown: str) -> Rule:
    """One listed item as the rule the planner reads (an item has no mode: the WAF rule's is `mode`)."""

    def bad(what: str) -> CloudflareError:
        return CloudflareError(f"unexpected list item in answer: {what}", method="GET", path=shown)

    item_id, ip, comment = item.get("id"), item.get("ip"), item.get("comment")
    if not isinstance(item_id, str) or not item_id:
        raise bad("no id")
    if not isinstance(ip, str):
        raise bad(f"item {item_id} has no ip")
    if comment is not None and not isinstance(comment, str):
        raise bad(f"item {item_id} has a comment of type {type(comment).__name__}")
    target, value = "ip", ip
    # Nearly every item is a plain IPv4 address, already as ip_network would write it: one regex match, not
    # ipaddress's Python (a quarter of a second of listing 10,000 items, between the cursor's pages).
    if not is_dotted_quad(ip):
        try:
            net = ipaddress.ip_network(ip, strict=False)
        except ValueError:
            raise bad(f"item {item_id} has ip {ip[:60]!r}, not an address or CIDR") from None
        if net.num_addresses == 1:
            target, value = "ip", str(net.network_address)
        elif net.version == 6 and net.prefixlen == IPV6_PREFIX:
            target, value = "ip6", net.network_address.compressed
        else:
            target, value = "ip_range", str(net)
    return Rule(
        id=item_id,
        scope=scope,
        target=target,
        value=value,
        mode=mode,
        notes=comment or "",
        created_on=timestamp(item.get("created_on"), item_id, "created_on", bad),
        modified_on=timestamp(item.get("modified_on"), item_id, "modified_on", bad),
    )
