"""Parsing fail2ban's answers and merging bans (fail2ban/parse.py, core/merge.py), with outputs captured
from fail2ban 1.0.2."""

from __future__ import annotations

import ipaddress
import time
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest
from dateutil import tz as dateutil_tz
from hypothesis import given, settings
from hypothesis import strategies as st

from reconcile.core.merge import merge
from reconcile.core.model import BanEntry
from reconcile.fail2ban.parse import parse_banip_with_time, parse_jail_list

TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")


def gettz(name: str) -> tzinfo:
    zone = dateutil_tz.gettz(name)
    assert zone is not None
    return zone


DATEUTIL_TOKYO = gettz("Asia/Tokyo")
DATEUTIL_NEW_YORK = gettz("America/New_York")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# --- status -------------------------------------------------------------------------------------------

STATUS_5 = (
    "Status\n|- Number of jail:\t5\n`- Jail list:\tmanual, nginx-http-auth, nginx-limit-req, recidive, sshd\n"
)
STATUS_3 = "Status\n|- Number of jail:\t3\n`- Jail list:\tnginx-limit-req, recidive, sshd\n"
STATUS_0 = "Status\n|- Number of jail:\t0\n`- Jail list:\t\n"


def test_jail_list_five() -> None:
    assert parse_jail_list(STATUS_5) == ("manual", "nginx-http-auth", "nginx-limit-req", "recidive", "sshd")


def test_jail_list_three_and_none() -> None:
    assert parse_jail_list(STATUS_3) == ("nginx-limit-req", "recidive", "sshd")
    assert parse_jail_list(STATUS_0) == ()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        "Server replied: pong\n",
        "Status\n|- Number of jail:\t2\n`- Jail list:\tsshd\n",  # count disagrees
        "Status\n|- Number of jail:\tfive\n`- Jail list:\tsshd\n",
        "Status\n`- Jail list:\tsshd\n",
        "Status\n|- Number of jail:\t2\n`- Jail list:\tsshd, \n",  # empty name
        "Status\n|- Number of jail:\t1\n`- Jail list:\tsshd\nextra line\n",
        "Status for the jail: sshd\n|- Filter\n|  |- Currently failed:\t0\n",
    ],
)
def test_jail_list_rejects_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected|jail"):
        parse_jail_list(text)


def test_jail_list_error_quotes_offending_line() -> None:
    with pytest.raises(ValueError, match="Number of jails: 1"):
        parse_jail_list("Status\n|- Number of jails: 1\n`- Jail list:\tsshd\n")


# --- banip --with-time ----------------------------------------------------------------------------------

NO_BANS = "\n"
ONE_BAN = "203.0.113.5 \t2026-11-21 04:47:38 + 3600 = 2026-11-21 05:47:38\n"
SEVERAL = (
    "198.51.100.7 \t2026-11-21 04:47:42 + 3600 = 2026-11-21 05:47:42\n"
    "198.51.100.8 \t2026-11-21 04:47:42 + 3600 = 2026-11-21 05:47:42\n"
    "2001:db8::1 \t2026-11-21 04:47:42 + 3600 = 2026-11-21 05:47:42\n"
    "2001:db8::2 \t2026-11-21 04:47:42 + 3600 = 2026-11-21 05:47:42\n"
    "192.0.2.1 \t2026-11-21 04:47:42 + 3600 = 2026-11-21 05:47:42\n"
)
PERMANENT = (
    "198.18.0.1 \t2026-11-21 04:48:13 + -1 = 9999-12-31 23:59:59\n"
    "2001:db8:ffff::9 \t2026-11-21 04:48:13 + -1 = 9999-12-31 23:59:59\n"
)
ODD_VALUES = (
    "192.0.2.0/24 \t2026-11-21 04:47:47 + 604800 = 2026-11-28 04:47:47\n"
    "not_an_ip \t2026-11-21 04:47:47 + 604800 = 2026-11-28 04:47:47\n"
    "2001:db8:1::/48 \t2026-11-21 04:47:47 + 604800 = 2026-11-28 04:47:47\n"
)


def test_no_bans_is_one_empty_line() -> None:
    assert parse_banip_with_time("sshd", NO_BANS, UTC) == []
    assert parse_banip_with_time("sshd", "", UTC) == []


def test_one_ban() -> None:
    assert parse_banip_with_time("sshd", ONE_BAN, UTC) == [
        BanEntry("sshd", "203.0.113.5", utc(2026, 11, 21, 4, 47, 38), utc(2026, 11, 21, 5, 47, 38))
    ]


def test_several_with_ipv6_keep_order_and_raw_values() -> None:
    entries = parse_banip_with_time("nginx-limit-req", SEVERAL, UTC)
    assert [e.value for e in entries] == [
        "198.51.100.7",
        "198.51.100.8",
        "2001:db8::1",
        "2001:db8::2",
        "192.0.2.1",
    ]
    assert {e.jail for e in entries} == {"nginx-limit-req"}
    assert {(e.start, e.end) for e in entries} == {
        (utc(2026, 11, 21, 4, 47, 42), utc(2026, 11, 21, 5, 47, 42))
    }


def test_permanent_has_no_end() -> None:
    entries = parse_banip_with_time("manual", PERMANENT, UTC)
    assert [(e.value, e.start, e.end) for e in entries] == [
        ("198.18.0.1", utc(2026, 11, 21, 4, 48, 13), None),
        ("2001:db8:ffff::9", utc(2026, 11, 21, 4, 48, 13), None),
    ]


def test_cidr_and_words_are_kept_raw() -> None:
    entries = parse_banip_with_time("recidive", ODD_VALUES, UTC)
    assert [e.value for e in entries] == ["192.0.2.0/24", "not_an_ip", "2001:db8:1::/48"]
    assert entries[1].end == utc(2026, 11, 28, 4, 47, 47)


def test_value_with_a_space_is_kept_raw() -> None:
    # fail2ban accepts `banip "a b"` and prints it as is; it must end up as an invalid entry, not a crash
    [entry] = parse_banip_with_time(
        "recidive", "a b \t2026-11-21 05:39:32 + 604800 = 2026-11-28 05:39:32\n", UTC
    )
    assert entry.value == "a b"


def test_end_is_start_plus_seconds_not_the_printed_end() -> None:
    # after a re-ban fail2ban printed `+ 3600 = 05:47:39` for a 04:47:38 start (facts §4); and `+ 3603`
    [a] = parse_banip_with_time(
        "sshd", "203.0.113.5 \t2026-11-21 04:47:38 + 3600 = 2026-11-21 05:47:39\n", UTC
    )
    assert a.end == utc(2026, 11, 21, 5, 47, 38)
    [b] = parse_banip_with_time(
        "sshd", "192.0.2.150 \t2026-11-21 04:57:12 + 3603 = 2026-11-21 05:57:15\n", UTC
    )
    assert b.end == utc(2026, 11, 21, 5, 57, 15)


def test_tokyo_server_time_converts_to_utc() -> None:
    # pitfall 4: a TZ=Asia/Tokyo server printed this for a ban stored as epoch 1795236681 = 04:51:21 UTC
    [entry] = parse_banip_with_time(
        "sshd", "203.0.113.5 \t2026-11-21 13:51:21 + 3600 = 2026-11-21 14:51:21\n", TOKYO
    )
    assert entry.start == utc(2026, 11, 21, 4, 51, 21)
    assert entry.start.timestamp() == 1795236681
    assert entry.end == utc(2026, 11, 21, 5, 51, 21)
    assert entry.start.tzinfo is UTC and entry.end.tzinfo is UTC


def test_dateutil_zones_work_too() -> None:
    [entry] = parse_banip_with_time(
        "sshd",
        "203.0.113.5 \t2026-11-21 13:51:21 + 3600 = 2026-11-21 14:51:21\n",
        DATEUTIL_TOKYO,
    )
    assert entry.start == utc(2026, 11, 21, 4, 51, 21)


@pytest.mark.parametrize("zone", [NEW_YORK, DATEUTIL_NEW_YORK], ids=["zoneinfo", "dateutil"])
def test_dst_fold_is_resolved_by_end(zone: tzinfo) -> None:
    # 2026-11-01 01:30 happens twice in New York (EDT 05:30Z, then EST 06:30Z); END tells which one it was
    first, second = parse_banip_with_time(
        "sshd",
        "198.18.0.1 \t2026-11-01 01:30:00 + 3600 = 2026-11-01 01:30:00\n"
        "198.18.0.2 \t2026-11-01 01:30:00 + 3600 = 2026-11-01 02:30:00\n",
        zone,
    )
    assert (first.start, first.end) == (utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30))
    assert (second.start, second.end) == (utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 7, 30))


def test_dst_fold_undecidable_takes_the_later_reading() -> None:
    # + 60 ends inside the fold either way, and a permanent ban has no END: the later instant wins
    short, permanent = parse_banip_with_time(
        "sshd",
        "198.18.0.1 \t2026-11-01 01:30:00 + 60 = 2026-11-01 01:31:00\n"
        "198.18.0.2 \t2026-11-01 01:30:00 + -1 = 9999-12-31 23:59:59\n",
        NEW_YORK,
    )
    assert (short.start, short.end) == (utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 6, 31))
    assert (permanent.start, permanent.end) == (utc(2026, 11, 1, 6, 30), None)


def test_time_in_dst_gap_moves_past_it() -> None:
    # 2026-03-08 02:30 does not exist in New York (a tz differing from the server's); read as 03:30 EDT
    [entry] = parse_banip_with_time(
        "sshd", "198.18.0.1 \t2026-03-08 02:30:00 + 60 = 2026-03-08 03:31:00\n", NEW_YORK
    )
    assert entry.start == utc(2026, 3, 8, 7, 30)
    assert entry.end == utc(2026, 3, 8, 7, 31)


def test_dst_spanning_ban_uses_seconds_not_wall_clock() -> None:
    # 1 h ban starting 00:30 EDT on the fall-back day ends at 01:30 EDT: 60 real minutes, not 2 h of wall time
    [entry] = parse_banip_with_time(
        "sshd", "198.18.0.1 \t2026-11-01 00:30:00 + 7200 = 2026-11-01 01:30:00\n", NEW_YORK
    )
    assert entry.start == utc(2026, 11, 1, 4, 30)
    assert entry.end == utc(2026, 11, 1, 6, 30)


def test_end_past_year_9999_is_permanent() -> None:
    [entry] = parse_banip_with_time(
        "sshd", "198.18.0.1 \t2026-11-21 04:48:13 + 999999999999 = 9999-12-31 23:59:59\n", UTC
    )
    assert entry.end is None


@pytest.mark.parametrize(
    "line",
    [
        "garbage",
        "203.0.113.5",  # `get banip` without --with-time
        "203.0.113.5 2026-11-21 04:47:38 + 3600 = 2026-11-21 05:47:38",  # no tab
        "203.0.113.5 \t2026-11-21 04:47:38 + 1h = 2026-11-21 05:47:38",
        "203.0.113.5 \t2026-11-21T04:47:38 + 3600 = 2026-11-21 05:47:38",
        "203.0.113.5 \t2026-13-21 04:47:38 + 3600 = 2026-11-21 05:47:38",  # month 13
        "203.0.113.5 \t2026-11-21 04:47:38 + 3600 = 2026-11-21 05:47:38 extra",
        " \t2026-11-21 04:47:38 + 3600 = 2026-11-21 05:47:38",  # no value
        "Sorry but the jail 'sshd' does not exist",
    ],
)
def test_garbage_line_names_jail_and_line(line: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_banip_with_time("sshd", ONE_BAN + line + "\n", UTC)
    message = str(err.value)
    assert "jail sshd" in message
    assert "line 2" in message
    assert repr(line)[:40] in message


def test_blank_line_between_bans_is_garbage() -> None:
    with pytest.raises(ValueError, match="line 2"):
        parse_banip_with_time("sshd", ONE_BAN + "\n" + ONE_BAN, UTC)


def test_huge_garbage_is_quoted_short() -> None:
    with pytest.raises(ValueError) as err:
        parse_banip_with_time("sshd", "x" * 1_000_000, UTC)
    assert len(str(err.value)) < 400


def test_ten_thousand_lines() -> None:
    lines = [f"198.18.{i // 256}.{i % 256}" for i in range(9000)] + [
        f"2001:db8:10::{i:x}" for i in range(1000)
    ]
    base = datetime(2026, 11, 21, 13, 48, 0)
    text = "".join(
        f"{ip} \t{base + timedelta(seconds=i % 600):%Y-%m-%d %H:%M:%S} + 3600 = "
        f"{base + timedelta(seconds=i % 600 + 3600):%Y-%m-%d %H:%M:%S}\n"
        for i, ip in enumerate(lines)
    )
    started = time.perf_counter()
    entries = parse_banip_with_time("sshd", text, TOKYO)
    bans, invalid = merge(entries)
    elapsed = time.perf_counter() - started
    assert len(entries) == 10_000 and len(bans) == 10_000 and invalid == []
    assert entries[0].start == utc(2026, 11, 21, 4, 48, 0)
    assert entries[-1].end == utc(2026, 11, 21, 5, 48, 0) + timedelta(seconds=9999 % 600)
    assert [b.ip.version for b in bans[:9000]] == [4] * 9000
    assert elapsed < 5.0  # about 0.3 s here; a regression to quadratic work would blow this


# --- merge ---------------------------------------------------------------------------------------------

T0 = utc(2026, 11, 21, 4, 0)


def entry(jail: str, value: str, start_min: int = 0, length_min: int | None = 60) -> BanEntry:
    start = T0 + timedelta(minutes=start_min)
    end = None if length_min is None else start + timedelta(minutes=length_min)
    return BanEntry(jail, value, start, end)


def test_one_ip_in_two_jails_takes_latest_end_and_earliest_start() -> None:
    bans, invalid = merge([entry("sshd", "203.0.113.5", 10, 60), entry("recidive", "203.0.113.5", 0, 10080)])
    assert invalid == []
    [ban] = bans
    assert ban.ip == ipaddress.ip_address("203.0.113.5")
    assert ban.jails == ("recidive", "sshd")
    assert ban.since == T0
    assert ban.until == T0 + timedelta(minutes=10080)


def test_permanent_wins() -> None:
    [ban], _ = merge(
        [
            entry("sshd", "198.18.0.1", 0, 60),
            entry("manual", "198.18.0.1", 5, None),
            entry("x", "198.18.0.1", 9, 9999),
        ]
    )
    assert ban.until is None
    assert ban.jails == ("manual", "sshd", "x")


def test_ipv6_spellings_merge() -> None:
    [ban], _ = merge(
        [
            entry("sshd", "2001:db8::2"),
            entry("nginx-limit-req", "2001:DB8:0:0::2", 1),
            entry("recidive", "2001:0db8:0000:0000:0000:0000:0000:0002", 2, 120),
        ]
    )
    assert ban.ip == ipaddress.IPv6Address("2001:db8::2")
    assert ban.jails == ("nginx-limit-req", "recidive", "sshd")
    assert ban.until == T0 + timedelta(minutes=122)


def test_ipv4_mapped_ipv6_becomes_ipv4_and_merges() -> None:
    [ban], _ = merge([entry("sshd", "::ffff:198.51.100.1"), entry("recidive", "198.51.100.1", 3)])
    assert ban.ip == ipaddress.IPv4Address("198.51.100.1")
    assert ban.jails == ("recidive", "sshd")


def test_invalid_entries_are_returned_in_order() -> None:
    bad = [
        entry("recidive", "192.0.2.0/24"),
        entry("recidive", "not_an_ip"),
        entry("recidive", "2001:db8:1::/48"),
        entry("recidive", "a b"),
        entry("sshd", "01.2.3.4"),  # leading zero: ambiguous (octal?), refused by ipaddress
        entry("sshd", "fe80::1%eth0"),  # a scoped address names an interface
        entry("sshd", ""),
        entry("sshd", " 192.0.2.7"),
    ]
    bans, invalid = merge([entry("sshd", "192.0.2.7"), *bad])
    assert [str(b.ip) for b in bans] == ["192.0.2.7"]
    assert invalid == bad


def test_order_is_version_then_address() -> None:
    values = ["2001:db8::10", "10.0.0.2", "2001:db8::9", "9.0.0.1", "10.0.0.10", "::1"]
    bans, _ = merge(entry("sshd", v) for v in values)
    assert [str(b.ip) for b in bans] == [
        "9.0.0.1",
        "10.0.0.2",
        "10.0.0.10",
        "::1",
        "2001:db8::9",
        "2001:db8::10",
    ]


def test_merge_of_nothing() -> None:
    assert merge([]) == ([], [])


# --- properties ------------------------------------------------------------------------------------------

ADDRESSES = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).flatmap(lambda a: st.sampled_from([a.compressed, a.exploded, a.exploded.upper()])),
    st.sampled_from(["not_an_ip", "192.0.2.0/24", "", "1.2.3", "::ffff:203.0.113.9"]),
)
ENTRIES = st.builds(
    entry,
    jail=st.sampled_from(["sshd", "recidive", "manual", "nginx-http-auth"]),
    value=ADDRESSES,
    start_min=st.integers(0, 10_000),
    length_min=st.one_of(st.none(), st.integers(0, 20_000)),
)


def _valid(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@settings(max_examples=300, deadline=None)
@given(st.lists(ENTRIES, max_size=40))
def test_merge_properties(entries: list[BanEntry]) -> None:
    bans, invalid = merge(entries)
    assert invalid == [e for e in entries if _valid(e.value) is None]
    valid: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for e in entries:
        if (ip := _valid(e.value)) is not None:
            valid.add(ip)
    assert [b.ip for b in bans] == sorted(valid, key=lambda a: (a.version, a))
    for ban in bans:
        group = [e for e in entries if _valid(e.value) == ban.ip]
        assert ban.jails == tuple(sorted({e.jail for e in group}))
        assert ban.since == min(e.start for e in group)
        ends = [e.end for e in group]
        assert ban.until == (None if None in ends else max(e for e in ends if e is not None))
    # merging is order-independent
    assert merge(reversed(entries))[0] == bans


@settings(max_examples=300, deadline=None)
@given(
    epoch=st.integers(1_700_000_000, 2_000_000_000),
    seconds=st.one_of(st.just(-1), st.integers(0, 2_000_000)),
    zone=st.sampled_from(["UTC", "Asia/Tokyo", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe"]),
)
def test_lines_formatted_like_fail2ban_read_back(epoch: int, seconds: int, zone: str) -> None:
    # format exactly as fail2ban's MyTime.time2str does (local wall time, fold dropped), then parse back
    z = ZoneInfo(zone)

    def wall(t: int) -> str:
        if t >= 253402214400:
            return "9999-12-31 23:59:59"
        return datetime.fromtimestamp(t, z).strftime("%Y-%m-%d %H:%M:%S")

    end_text = wall(2**40 if seconds == -1 else epoch + seconds)
    [parsed] = parse_banip_with_time("j", f"198.18.0.1 \t{wall(epoch)} + {seconds} = {end_text}\n", z)
    true_start = datetime.fromtimestamp(epoch, UTC)
    # never earlier than the truth; later only by a DST shift the output could not disambiguate
    assert timedelta(0) <= parsed.start - true_start <= timedelta(hours=1)
    assert parsed.start.astimezone(z).strftime("%Y-%m-%d %H:%M:%S") == wall(epoch)
    if seconds == -1:
        assert parsed.end is None
    else:
        assert parsed.end == parsed.start + timedelta(seconds=seconds)
        if seconds >= 2 * 3600:  # END lies outside the fold: the reading is exact
            assert parsed.start == true_start
