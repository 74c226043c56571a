"""The planner's fast paths of issue 18 (second pass) against the plain definitions they stand in for.

Each must give the same value for every input: an address's compressed text from its integer, an add's
note in one format, an add made without _for_banned, a base tuple made without NamedTuple's __new__, and
the writes sorted with keys read in C.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from reconcile.core import addresses, model, notes, plan_text, planner, ranges, render
from reconcile.core.addresses import compressed
from reconcile.core.changes import Action, Change, Owner, OwnerKind, Plan, Policy
from reconcile.core.merge import address_of, merge
from reconcile.core.model import Ban, BanEntry, Rule, RuleListing, Scope, ScopeKind
from reconcile.core.notes import Lease, format_note, plain_note
from reconcile.core.planner import make_plan
from reconcile.fail2ban import restore

TAG = "Blocked by fail2ban"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
ZONE = Scope(ScopeKind.ZONE, "z1")
ACCOUNT = Scope(ScopeKind.ACCOUNT, "a1")

# Hextets drawn mostly from zero, so that runs of zeros of every length and position come up.
hextet = st.sampled_from([0, 0, 0, 1, 0xFFFF]) | st.integers(0, 0xFFFF)
v6_ints = st.lists(hextet, min_size=8, max_size=8).map(lambda h: int("".join(f"{x:04x}" for x in h), 16))


@settings(max_examples=100)
@given(
    v4=st.integers(0, 2**32 - 1), v6=v6_ints | st.integers(0, 2**128 - 1), mapped=st.integers(0, 2**32 - 1)
)
def test_compressed_is_ipaddress_text(v4: int, v6: int, mapped: int) -> None:
    for ip in (
        ipaddress.IPv4Address(v4),
        ipaddress.IPv6Address(v6),
        ipaddress.IPv6Address((0xFFFF << 32) | mapped),
    ):
        assert compressed(ip) == ip.compressed


@settings(max_examples=100)
@given(v4=st.integers(0, 2**32 - 1), v6=v6_ints, mapped=st.integers(0, 2**32 - 1), which=st.integers(0, 2))
def test_keyed_is_compressed_and_the_classifier(v4: int, v6: int, mapped: int, which: int) -> None:
    allowlist = ((), (ipaddress.ip_network("45.0.0.0/8"),), (ipaddress.ip_network("0.0.0.0/1"),))[which]
    skip = addresses.Classifier(allowlist, ranges.ALL)
    for ip in (
        ipaddress.IPv4Address(v4),
        ipaddress.IPv6Address(v6),
        ipaddress.IPv6Address((0xFFFF << 32) | mapped),
    ):
        assert skip.keyed(ip) == (ip.compressed, addresses._skip_slowly(ip, allowlist, ranges.ALL))


def test_compressed_edges() -> None:
    for text in ("::", "::1", "1::", "1:0:0:1:0:0:0:1", "1:0:0:2:0:0:3:4", "0:0:1:0:0:1:0:0", "fe80::1%eth0",
                 "::ffff:1.2.3.4", "2001:db8:0:0:1:0:0:1", "0.0.0.0", "255.255.255.255"):  # fmt: skip
        ip = ipaddress.ip_address(text)
        assert compressed(ip) == ip.compressed, text


names = st.text(st.characters(codec="utf-8"), max_size=30)
zones = st.sampled_from([UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=30))])
moments = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=zones)


@settings(max_examples=150)
@given(
    jails=st.lists(names, max_size=30).map(tuple) | st.lists(names, max_size=30),
    hosts=st.lists(names, min_size=1, max_size=12).map(tuple),
    since=moments,
    until=st.none() | moments,
    tag=st.sampled_from([TAG, "x" * 450, "fail2ban"]),
)
def test_plain_note_is_format_note(
    jails: tuple[str, ...], hosts: tuple[str, ...], since: datetime, until: datetime | None, tag: str
) -> None:
    general = notes._format_note(tag, Lease(jails, hosts, since, until))  # the path without plain_note
    assert (
        plain_note(tag, jails, hosts, since, until)
        == general
        == format_note(tag, Lease(jails, hosts, since, until))
    )


@given(
    since=moments,
    untils=st.lists(st.none() | moments, min_size=1, max_size=4),
    tag=st.sampled_from([TAG, "x" * 450]),
)
def test_plain_note_reusing_its_last_times_is_format_note(
    since: datetime, untils: list[datetime | None], tag: str
) -> None:
    """The same time objects again (a bulk ban), others between: each note is still format_note's."""
    for until in [*untils, *untils]:
        for moment in (since, since.astimezone(UTC)):
            lease = Lease(("sshd",), ("web1",), moment, until)
            assert plain_note(tag, ("sshd",), ("web1",), moment, until) == notes._format_note(tag, lease)


jail_names = st.sampled_from(["sshd", "recidive", "nginx", "x" * 300])
bans = st.lists(
    st.builds(
        Ban,
        ip=st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address) | v6_ints.map(ipaddress.IPv6Address),
        jails=st.lists(jail_names, min_size=1, max_size=3, unique=True).map(lambda j: tuple(sorted(j))),
        since=st.integers(-400, 0).map(lambda h: NOW + timedelta(hours=h)),
        until=st.none() | st.integers(-10, 400).map(lambda h: NOW + timedelta(hours=h)),
    ),
    max_size=40,
)


@settings(max_examples=100)
@given(bans=bans, host=st.sampled_from(["web1", "WEB 1", "h" * 480]))
def test_an_add_is_what_for_banned_makes(bans: list[Ban], host: str) -> None:
    policy = Policy(tag=TAG, host_id=host)
    plan = make_plan(bans, [], [RuleListing(ZONE, ())], policy, NOW)
    expected = {}
    for ban in bans:
        value = compressed(ban.ip)
        end = ban.until
        if addresses.classifier((), ())(ban.ip) is addresses.Skip.NONE and (end is None or end > NOW):
            expected[value] = planner._for_banned(ZONE, ban.ip, value, ban, end, None, policy, NOW)
    made = {c.value: c for c in plan.changes if c.scope is not None}
    assert made == expected


def test_base_tuple_is_the_named_tuple() -> None:
    ban = Ban(ipaddress.IPv4Address("45.0.0.1"), ("sshd",), NOW, None)
    fields = ("45.0.0.1", ZONE, ban, None, Owner(OwnerKind.HOSTS, ("web1",)), ("sshd",), ban.ip, "AS1")
    fast = planner._tuple(planner._Base, fields)
    plain = planner._Base(*fields)
    assert (
        fast == plain
        and type(fast) is type(plain)
        and fast.asn == "AS1"
        and fast.keep("k") == plain.keep("k")
    )


actions = st.sampled_from(list(Action))
changes = st.lists(
    st.builds(
        Change,
        action=actions,
        value=st.sampled_from(["45.0.0.1", "45.0.0.10", "45.0.0.2", "2a06::1"]),
        reason=st.just("r"),
        scope=st.sampled_from([ZONE, ACCOUNT, None]),
        ban=st.none()
        | st.builds(
            Ban,
            ip=st.just(ipaddress.IPv4Address("45.0.0.1")),
            jails=st.just(("sshd",)),
            since=moments,
            until=st.none(),
        ),
        notes=st.sampled_from(["a", "b"]),
    ),
    max_size=30,
)


@settings(max_examples=150)
@given(changes=changes)
def test_writes_are_in_write_key_order(changes: list[Change]) -> None:
    plan = Plan(tuple(changes))
    expected = sorted((c for c in changes if c.is_write), key=Change.write_key)
    got = plan.writes()
    assert [id(c) for c in got] == [id(c) for c in expected]


def test_writes_with_a_naive_or_missing_start_take_the_plain_sort() -> None:
    naive = Ban(ipaddress.IPv4Address("45.0.0.1"), ("sshd",), datetime(2026, 1, 1), None)
    aware = Ban(ipaddress.IPv4Address("45.0.0.2"), ("sshd",), NOW, None)
    changes = (
        Change(Action.ADD, "45.0.0.1", "r", ZONE, naive),
        Change(Action.ADD, "45.0.0.2", "r", ZONE, aware),
        Change(Action.ADD, "45.0.0.3", "r", ZONE, None),
        Change(Action.EXPIRE, "45.0.0.4", "r", ZONE),
    )
    plan = Plan(changes)
    assert plan.writes() == sorted(changes, key=Change.write_key)


def test_a_rule_listed_for_a_ban_still_takes_the_long_way() -> None:
    ban = Ban(
        ipaddress.IPv4Address("45.0.0.1"), ("sshd",), NOW - timedelta(hours=1), NOW + timedelta(hours=1)
    )
    notes = format_note(TAG, Lease(("sshd",), ("web1",), ban.since, ban.until)) or ""
    rule = Rule("r1", ZONE, "ip", "45.0.0.1", "block", notes, NOW)
    plan = make_plan([ban], [], [RuleListing(ZONE, (rule,))], Policy(tag=TAG, host_id="web1"), NOW)
    [change] = plan.changes
    assert change.action is Action.KEEP and change.reason == "up to date" and change.rule == rule


@given(hosts=st.lists(names, max_size=6).map(tuple), me=names)
def test_others_than_is_the_plain_filter(hosts: tuple[str, ...], me: str) -> None:
    assert plan_text.others_than(hosts, me) == tuple(h for h in hosts if h != me)


@settings(max_examples=50)
@given(hosts=st.lists(names, min_size=1, max_size=6).map(tuple))
def test_joining_is_the_owners_text(hosts: tuple[str, ...]) -> None:
    """The join's reason, made once per host set: what f"joining {owner}" gave for the rule's owner."""
    assert plan_text.joining(hosts) == f"joining {Owner(OwnerKind.HOSTS, hosts)}"


@given(jail=names, value=names, start=moments, end=st.none() | moments)
def test_fast_entry_and_ban_equal_the_dataclasses(
    jail: str, value: str, start: datetime, end: datetime | None
) -> None:
    assert model.ban_entry(jail, value, start, end) == BanEntry(jail, value, start, end)
    assert repr(model.ban_entry(jail, value, start, end)) == repr(BanEntry(jail, value, start, end))
    ip = ipaddress.IPv4Address("45.0.0.1")
    assert model.make_ban(ip, (jail,), start, end) == Ban(ip, (jail,), start, end)
    assert hash(model.make_ban(ip, (jail,), start, end)) == hash(Ban(ip, (jail,), start, end))
    stored = restore.db_ban(jail, value, 1_700_000_000, -1)
    assert stored == restore.DbBan(jail, value, 1_700_000_000, -1)
    assert repr(stored) == repr(restore.DbBan(jail, value, 1_700_000_000, -1))


def _examples_slowly(bans: list[Ban]) -> dict[str, str]:
    examples: dict[str, str] = {}
    for ban in bans:
        if ranges.is_misconfiguration(ban.ip):
            for jail in ban.jails:
                examples.setdefault(jail, ban.ip.compressed)
    return examples


# Around loopback and Cloudflare's ranges, and anywhere.
near = st.sampled_from(
    [0x7F000000, 0x7EFFFFFF, 0x7FFFFFFF, 0x80000000]
    + [int(n.network_address) + d for n in ranges.IPV4 for d in (-1, 0)]
    + [int(n.broadcast_address) + d for n in ranges.IPV4 for d in (0, 1)]
)
v4_near = (near | st.integers(0, 2**32 - 1)).map(ipaddress.IPv4Address)
v6_any = st.sampled_from(["::1", "::ffff:127.0.0.1", "::ffff:104.16.0.1", "2606:4700::1", "2a06::1"]).map(
    ipaddress.IPv6Address
)


@settings(max_examples=150)
@given(
    ips=st.lists(v4_near | v6_any, max_size=20), jails=st.lists(st.sampled_from(["a", "b", "c"]), min_size=20)
)
def test_misconfigured_examples_are_the_plain_ones(
    ips: list[ipaddress.IPv4Address], jails: list[str]
) -> None:
    # In merge's order, as misconfigured_examples takes them (one address may be in several bans here).
    bans = sorted(
        (Ban(ip, (jail,), NOW, None) for ip, jail in zip(ips, jails, strict=False)),
        key=lambda ban: (ban.ip.version, int(ban.ip)),
    )
    assert ranges.misconfigured_examples(bans) == _examples_slowly(bans)


@settings(max_examples=100)
@given(moment=moments)
def test_when_cached_for_utc_is_the_plain_text(moment: datetime) -> None:
    assert render._when(moment) == render._when_text(moment)
    assert render._when(moment.astimezone(UTC)) == render._when_text(moment.astimezone(UTC))


def _merge_slowly(entries: list[BanEntry]) -> tuple[list[Ban], list[BanEntry]]:
    """merge before its IPv4 path: address_of for every entry, keyed by the address's version and integer."""
    by_key: dict[tuple[int, int], tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, list[BanEntry]]] = {}
    invalid = []
    for entry in entries:
        ip = address_of(entry.value)
        if ip is None:
            invalid.append(entry)
            continue
        by_key.setdefault((ip.version, int(ip)), (ip, []))[1].append(entry)
    bans = []
    for order in sorted(by_key):
        ip, group = by_key[order]
        ends = [e.end for e in group]
        until = None if any(end is None for end in ends) else max(end for end in ends if end is not None)
        bans.append(Ban(ip, tuple(sorted({e.jail for e in group})), min(e.start for e in group), until))
    return bans, invalid


entry_values = st.sampled_from(
    ["45.0.0.1", "45.0.0.01", "1.2.3.4", "255.255.255.255", "0.0.0.0", "::ffff:1.2.3.4", "2a06::1",
     "2A06::1", "fe80::1%eth0", "junk", "", "1.2.3", "256.1.1.1", " 1.2.3.4"]
) | st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))  # fmt: skip
entries = st.lists(
    st.builds(
        BanEntry,
        jail=st.sampled_from(["sshd", "recidive"]),
        value=entry_values,
        start=st.integers(-9, 0).map(lambda h: NOW + timedelta(hours=h)),
        end=st.none() | st.integers(0, 9).map(lambda h: NOW + timedelta(hours=h)),
    ),
    max_size=30,
)


@settings(max_examples=150)
@given(entries=entries)
def test_merge_is_the_plain_merge(entries: list[BanEntry]) -> None:
    assert merge(entries) == _merge_slowly(entries)


# Dotted quads (merge's own reading of them), among them at most one near miss: a text a looser reader of
# IPv4 (inet_aton, say) accepts and ipaddress does not, and one address in two jails.
near_misses = st.sampled_from(
    ["01.2.3.4", "1.2.3", "1.2.3.4 ", " 1.2.3.4", "1.2.3.4\n", "1.2.3.4\x00", "0x1.2.3.4", "1", "1.2.3.4.5",
     "256.1.1.1", "1.2.3.04", "::ffff:1.2.3.4", "\u0661.2.3.4"]
)  # fmt: skip
quads = st.lists(
    st.builds(
        BanEntry,
        jail=st.sampled_from(["sshd", "recidive"]),
        value=st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n))),
        start=st.integers(-9, 0).map(lambda h: NOW + timedelta(hours=h)),
        end=st.none() | st.integers(0, 9).map(lambda h: NOW + timedelta(hours=h)),
    ),
    max_size=30,
)


@settings(max_examples=150)
@given(entries=quads, odd=st.none() | st.tuples(st.integers(0, 30), near_misses), again=st.booleans())
def test_merge_of_dotted_quads_is_the_plain_merge(
    entries: list[BanEntry], odd: tuple[int, str] | None, again: bool
) -> None:
    if odd is not None:
        at, value = odd
        entries.insert(min(at, len(entries)), BanEntry("sshd", value, NOW, None))
    if again and entries:  # one address twice
        entries.append(BanEntry("recidive", entries[0].value, NOW - timedelta(hours=20), None))
    assert merge(entries) == _merge_slowly(entries)
    assert merge(tuple(entries)) == _merge_slowly(entries)


host_sets = st.sampled_from(
    [("web1",), ("web2",), ("web2", "web3"), ("web1", "web2"), ("w" * 300,), ("a\x1bb",)]
)
lease_rules = st.lists(
    st.tuples(
        st.integers(45 << 24, (46 << 24) - 1).map(lambda n: str(ipaddress.IPv4Address(n))),  # global
        host_sets,
        st.none() | st.integers(-48, 48).map(lambda h: NOW + timedelta(hours=h, seconds=7)),
        st.sampled_from(["banned", "ended", "not banned"]),
        st.sampled_from(["block", "challenge", "whitelist"]),
    ),
    max_size=25,
    unique_by=lambda t: t[0],
)


@settings(max_examples=150)
@given(listed=lease_rules)
def test_another_hosts_lease_is_kept_as_for_unbanned_keeps_it(
    listed: list[tuple[str, tuple[str, ...], datetime | None, str, str]],
) -> None:
    policy = Policy(tag=TAG, host_id="web1")
    since = NOW - timedelta(days=3)
    rules, bans = [], []
    for i, (value, hosts, until, here, mode) in enumerate(listed):
        text = format_note(TAG, Lease(("sshd",), hosts, since, until))
        assert text is not None
        rules.append(Rule(f"r{i}", ZONE, "ip", value, mode, text, NOW - timedelta(days=1)))
        if here != "not banned":  # an ended ban is not desired: _for_unbanned's other reasons
            end = NOW + timedelta(hours=1 if here == "banned" else -1)
            bans.append(Ban(ipaddress.IPv4Address(value), ("sshd",), since, end))
    bans.sort(key=lambda b: int(b.ip))
    plan = make_plan(bans, [], [RuleListing(ZONE, tuple(rules))], policy, NOW)
    made = {c.value: c for c in plan.changes if c.scope is not None}  # not the unscoped skips
    ended = {str(b.ip): b for b in bans if b.until is not None and b.until <= NOW}
    for rule in rules:
        if any(str(b.ip) == rule.value and b.until and b.until > NOW for b in bans):
            continue  # banned here: _for_banned's business
        note = notes.parse_note(rule.notes, TAG)
        owner = planner.owner_of(rule, note)
        if not owner.managed:
            assert rule.value not in made
            continue
        ban = ended.get(rule.value)
        reason = "ban ended" if ban else "no longer banned"
        ip = ipaddress.IPv4Address(rule.value)
        listing = planner._Listed(rule, note, owner)
        expected = planner._for_unbanned(ZONE, ip, rule.value, listing, ban, reason, policy, NOW)
        assert made[rule.value] == expected
