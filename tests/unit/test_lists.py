"""The list backend (DESIGN §9): its pure helpers (/64 items, foreign cover, capacity), then the installed
command against a real fail2ban and the emulator's account list (bulk operations, cursor, capacity)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconcile.cloudflare.list_plan import (
    OVER_CAPACITY,
    fit_capacity,
    foreign_cover,
    group_bans,
    item_rule,
    label_networks,
    spare_allowlisted,
)
from reconcile.cloudflare.retire import retire
from reconcile.core.changes import Action, Capacity, Plan, Policy
from reconcile.core.model import Ban, Rule, RuleListing, Scope, ScopeKind
from reconcile.core.notes import Lease, format_note
from reconcile.core.planner import make_plan
from reconcile.errors import CloudflareError

TAG = "Blocked by fail2ban"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
LIST = Scope(ScopeKind.LIST, "c" * 32)
POLICY = Policy(tag=TAG, host_id="web1")


def ban(ip: str, minutes_ago: int = 0, *, until: datetime | None = NOW + timedelta(hours=1)) -> Ban:
    return Ban(ipaddress.ip_address(ip), ("sshd",), NOW - timedelta(minutes=minutes_ago), until)


def item(ip: str, comment: str | None, item_id: str = "") -> Rule:
    doc = {"id": item_id or f"{abs(hash(ip)):032x}"[:32], "ip": ip, "comment": comment}
    return item_rule(doc, LIST, "block", "GET /items")


def own(ip: str, minutes_ago: int, hosts: tuple[str, ...] = ("web1",)) -> Rule:
    since = NOW - timedelta(minutes=minutes_ago)
    return item(ip, format_note(TAG, Lease(("sshd",), hosts, since, NOW + timedelta(hours=1))))


def plan_of(bans: list[Ban], items: list[Rule]) -> Plan:
    grouped, groups = group_bans(bans)
    plan = make_plan(grouped, [], [RuleListing(LIST, tuple(items))], POLICY, NOW)
    return foreign_cover(label_networks(plan, groups), items, POLICY)


def by_value(plan: Plan) -> dict[str, tuple[Action, str]]:
    return {c.value: (c.action, c.reason) for c in plan.changes}


# --- pure: /64 items ---------------------------------------------------------------------------------


def test_ipv6_bans_in_one_64_share_one_item_with_the_latest_end() -> None:
    later = NOW + timedelta(hours=5)
    bans = [ban("2a06:4880:1:2::7", 5), ban("2a06:4880:1:2:ffff::8", 1, until=later), ban("45.155.205.1")]
    grouped, groups = group_bans(bans)
    assert groups == {ipaddress.ip_address("2a06:4880:1:2::")}
    (shared,) = [b for b in grouped if b.ip.version == 6]
    assert shared.until == later and shared.since == NOW - timedelta(minutes=5)
    plan = plan_of(bans, [])
    assert {v: a for v, (a, _) in by_value(plan).items()} == {
        "2a06:4880:1:2::/64": Action.ADD,
        "45.155.205.1": Action.ADD,
    }


def test_a_permanent_ban_makes_the_64_permanent_and_an_allowlisted_address_stays_alone() -> None:
    bans = [ban("2a06:4880:1:2::7"), ban("2a06:4880:1:2::8", until=None), ban("2a06:4880:9::1")]
    allow = (ipaddress.ip_network("2a06:4880:9::1/128"),)
    grouped, groups = group_bans(bans, allow)
    assert len(groups) == 1
    assert {(b.ip.compressed, b.until) for b in grouped} == {
        ("2a06:4880:1:2::", None),
        ("2a06:4880:9::1", NOW + timedelta(hours=1)),
    }


def test_a_64_holding_an_allowlisted_address_is_never_written() -> None:
    allow = (ipaddress.ip_network("2a06:4880:1:2::5/128"),)
    bans = [ban("2a06:4880:1:2::7"), ban("2a06:4880:1:3::7")]
    grouped, groups = group_bans(bans, allow)
    planned = make_plan(grouped, [], [RuleListing(LIST, ())], POLICY, NOW)
    plan = spare_allowlisted(label_networks(planned, groups), allow)
    got = by_value(plan)
    assert got["2a06:4880:1:2::/64"] == (Action.SKIP, "its /64 holds allowlisted 2a06:4880:1:2::5/128")
    assert got["2a06:4880:1:3::/64"][0] is Action.ADD


def test_the_64_item_stays_while_one_address_is_banned_and_goes_when_none_is() -> None:
    listed = [own("2a06:4880:1:2::/64", 5)]
    one_left = plan_of([ban("2a06:4880:1:2::8", 5)], listed)
    assert by_value(one_left)["2a06:4880:1:2::/64"][0] in (Action.KEEP, Action.RENEW)
    none_left = plan_of([], listed)
    assert by_value(none_left)["2a06:4880:1:2::/64"] == (Action.EXPIRE, "no longer banned")


def test_items_are_read_as_rules() -> None:
    assert (item("45.155.205.1", None).target, item("45.155.205.1/32", None).value) == ("ip", "45.155.205.1")
    assert (item("2a06:4880:1:2::/64", "").target, item("2a06:4880:1:2::/64", "").value) == (
        "ip6",
        "2a06:4880:1:2::",
    )
    assert (item("45.155.0.0/16", "x").target, item("2a06::/32", "x").target) == ("ip_range", "ip_range")


def _read_by_ipaddress(ip: str) -> tuple[str, str] | None:
    """An item's (target, value) as ipaddress reads its `ip`; None where it reads no address or CIDR."""
    try:
        net = ipaddress.ip_network(ip, strict=False)
    except ValueError:
        return None
    if net.num_addresses == 1:
        return "ip", str(net.network_address)
    if net.version == 6 and net.prefixlen == 64:
        return "ip6", net.network_address.compressed
    return "ip_range", str(net)


# item_rule reads a plain dotted quad without ipaddress; near misses must still go the way ipaddress decides.
item_ips = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n))) | st.sampled_from(
    ["01.2.3.4", "1.2.3", "1.2.3.4 ", " 1.2.3.4", "1.2.3.4\n", "1.2.3.4\x00", "0x1.2.3.4", "1", "1.2.3.4.5",
     "256.1.1.1", "1.2.3.04", "::ffff:1.2.3.4", "\u0661.2.3.4", "1.2.3.4/32", "1.2.3.0/24", "1.2.3.4/33",
     "0.0.0.0", "255.255.255.255", "2a06:4880::1", "2a06:4880::/64", ""]
)  # fmt: skip


@settings(max_examples=300)
@given(ip=item_ips)
def test_an_items_address_is_read_as_ipaddress_reads_it(ip: str) -> None:
    expected = _read_by_ipaddress(ip)
    if expected is None:
        with pytest.raises(CloudflareError, match="not an address or CIDR"):
            item(ip, None)
    else:
        got = item(ip, None)
        assert (got.target, got.value) == expected


def test_a_foreign_item_or_wider_cidr_makes_the_ban_foreign_and_a_tagged_cidr_does_not() -> None:
    items = [item("45.155.205.1", "partner"), item("45.156.0.0/16", "office"), item("2a06:4880::/48", "")]
    items.append(item("91.240.0.0/16", f"{TAG} by hand"))
    bans = [ban("45.155.205.1"), ban("45.156.7.8"), ban("2a06:4880:0:5::1"), ban("91.240.118.172")]
    got = by_value(plan_of(bans, items))
    assert got["45.155.205.1"][0] is Action.FOREIGN
    assert got["45.156.7.8"] == (Action.FOREIGN, "an untagged item 45.156.0.0/16 covers it")
    assert got["2a06:4880:0:5::/64"] == (Action.FOREIGN, "an untagged item 2a06:4880::/48 covers it")
    assert got["91.240.118.172"][0] is Action.ADD


# --- pure: capacity ----------------------------------------------------------------------------------


def test_newest_bans_win_the_oldest_own_items_make_room_others_and_foreign_stay() -> None:
    items = [own("45.155.205.1", 50), own("45.155.205.2", 40), own("45.155.205.3", 60, ("web1", "web2"))]
    items += [own("45.155.205.4", 90, ("web2",)), item("45.155.205.5", "operator")]
    bans = [ban("45.155.205.1", 50), ban("45.155.205.2", 40), ban("45.155.205.3", 60)]
    bans += [ban("45.155.206.1", 1), ban("45.155.206.2", 2), ban("45.155.206.3", 45), ban("45.155.206.4", 70)]
    fitted = fit_capacity(plan_of(bans, items), listed=5, capacity=6, host_id="web1")
    got = by_value(fitted.plan)
    assert got["45.155.206.1"][0] is Action.ADD  # the one free slot: the newest
    assert got["45.155.206.2"][0] is Action.ADD  # takes the place of web1's oldest own item (50 min)
    assert got["45.155.205.1"][0] is Action.EXPIRE and got["45.155.205.1"][1].startswith(OVER_CAPACITY)
    assert got["45.155.206.3"] == (Action.SKIP, OVER_CAPACITY)  # 45 min: older than web1's item of 40 min
    assert got["45.155.206.4"] == (Action.SKIP, OVER_CAPACITY)
    assert got["45.155.205.2"][0] is Action.KEEP  # its ban is newer than every add left over
    assert got["45.155.205.3"][0] is Action.KEEP  # shared with web2: never pushed out
    assert got["45.155.205.4"][0] is Action.KEEP and "45.155.205.5" not in got  # foreign, not banned
    assert fitted.expiries_first
    total = 5 + fitted.plan.count(Action.ADD) - fitted.plan.count(Action.EXPIRE)
    assert total == 6


def test_with_room_nothing_changes_and_adds_go_first() -> None:
    plan = plan_of([ban("45.155.206.1"), ban("45.155.206.2")], [])
    fitted = fit_capacity(plan, listed=0, capacity=2, host_id="web1")
    assert fitted.plan == plan and not fitted.expiries_first


def test_a_full_list_of_others_skips_every_add_and_an_overfull_list_is_not_shrunk() -> None:
    others = [own(f"45.155.205.{i}", 99, ("web2",)) for i in range(3)]
    plan = plan_of([ban("45.155.206.1")], others)
    assert by_value(fit_capacity(plan, 3, 3, "web1").plan)["45.155.206.1"] == (Action.SKIP, OVER_CAPACITY)
    mine = [own(f"45.155.205.{i}", 99) for i in range(4)]
    plan = plan_of([ban(f"45.155.205.{i}", 99) for i in range(4)] + [ban("45.155.206.1")], mine)
    fitted = fit_capacity(plan, listed=4, capacity=2, host_id="web1")  # capacity lowered below the list
    assert fitted.plan.count(Action.EXPIRE) == 0
    assert by_value(fitted.plan)["45.155.206.1"] == (Action.SKIP, OVER_CAPACITY)


def test_retiring_rules_keeps_the_rule_of_a_ban_the_list_has_no_room_for() -> None:
    zone = Scope(ScopeKind.ZONE, "a" * 32)
    rules = [
        Rule(
            f"{i:032x}",
            zone,
            "ip",
            ip,
            "block",
            format_note(TAG, Lease(("sshd",), ("web1",), NOW, None)) or "",
        )
        for i, ip in enumerate(("45.155.206.1", "45.155.206.2", "2a06:4880:1:2::7"))
    ]
    bans = [ban("45.155.206.1", 1), ban("45.155.206.2", 9), ban("2a06:4880:1:2::7", 9)]
    fitted = fit_capacity(plan_of(bans, []), listed=0, capacity=1, host_id="web1").plan
    assert by_value(fitted)["45.155.206.2"] == (Action.SKIP, OVER_CAPACITY)
    retired = retire(fitted, bans, [RuleListing(zone, tuple(rules))], POLICY, NOW, 1.0)
    got = {c.value: c.action for c in retired.changes}
    assert got["45.155.206.1"] is Action.EXPIRE  # the list blocks it now
    assert got["45.155.206.2"] is not Action.EXPIRE and got["2a06:4880:1:2::7"] is not Action.EXPIRE
    assert Action.ADD not in got.values()


def test_capacity_is_typed_on_the_change_and_retiring_asks_it_not_the_reason() -> None:
    bans = [ban("45.155.205.1", 50), ban("45.155.206.1", 1), ban("45.155.206.2", 90)]
    fitted = fit_capacity(plan_of(bans, [own("45.155.205.1", 50)]), listed=1, capacity=1, host_id="web1").plan
    got = {c.value: (c.action, c.capacity) for c in fitted.changes}
    assert got == {
        "45.155.205.1": (Action.EXPIRE, Capacity.EVICTED),  # web1's oldest own item makes room
        "45.155.206.1": (Action.ADD, None),
        "45.155.206.2": (Action.SKIP, Capacity.OVER),
    }
    zone = Scope(ScopeKind.ZONE, "a" * 32)
    note = format_note(TAG, Lease(("sshd",), ("web1",), NOW, None)) or ""
    rules = RuleListing(zone, (Rule("1" * 32, zone, "ip", "45.155.206.2", "block", note),))
    reworded = replace(fitted, changes=tuple(replace(c, reason="no room") for c in fitted.changes))
    retired = retire(reworded, bans, [rules], POLICY, NOW, 1.0)
    (kept,) = retired.changes  # the list has no room for it: its rule stays
    assert kept.value == "45.155.206.2" and kept.action is not Action.EXPIRE


# --- the installed command, a real fail2ban, the emulator's account list --------------------------------
