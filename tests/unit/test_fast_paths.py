"""The planner's and note parser's fast paths (issue 12) against the slow definitions they replace.

plan.Classifier answers `is_allowlisted` and the Cloudflare-range check by bisection; notes' format and
parse fast paths handle format_note's own shape. Each must agree with the plain definition for every input,
boundaries above all; fail2ban's concurrent jail reads keep the all-or-nothing rule.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconcile.core import notes, ranges
from reconcile.core.addresses import DOCUMENTATION, Classifier, Skip, _skip_slowly, _stdlib_networks
from reconcile.core.model import Network
from reconcile.core.notes import Lease, format_note, parse_note

TAG = "Blocked by fail2ban"
T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)

ALLOWLISTS: list[tuple[Network, ...]] = [
    (),
    tuple(ipaddress.ip_network(n) for n in ("45.155.205.0/24", "2a06:4880::/32", "8.8.8.8/32")),
    tuple(ipaddress.ip_network(n) for n in ("0.0.0.0/1", "104.16.0.0/12", "::/1")),
]


def _cut_points(networks: tuple[Network, ...]) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every first, last, and neighbour address of every network involved, in both families (mapped too)."""
    points: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for net in (*_stdlib_networks(), *DOCUMENTATION, *ranges.ALL, *networks):
        for edge in (int(net.network_address), int(net.broadcast_address)):
            for value in (edge - 1, edge, edge + 1):
                if net.version == 4 and 0 <= value < 2**32:
                    points.add(ipaddress.IPv4Address(value))
                    points.add(ipaddress.IPv6Address((0xFFFF << 32) | value))
                if net.version == 6 and 0 <= value < 2**128:
                    points.add(ipaddress.IPv6Address(value))
    return points


@pytest.mark.parametrize("allowlist", ALLOWLISTS, ids=["none", "cidrs", "wide"])
@pytest.mark.parametrize("cloudflare", [(), ranges.ALL], ids=["no-cf", "cf"])
def test_classifier_agrees_with_the_definition_on_every_boundary(
    allowlist: tuple[Network, ...], cloudflare: tuple[Network, ...]
) -> None:
    fast = Classifier(allowlist, cloudflare)
    for ip in _cut_points(allowlist):
        assert fast(ip) is _skip_slowly(ip, allowlist, cloudflare), ip


@settings(max_examples=400)
@given(
    v4=st.integers(0, 2**32 - 1),
    v6=st.integers(0, 2**128 - 1),
    mapped=st.integers(0, 2**32 - 1),
    which=st.integers(0, len(ALLOWLISTS) - 1),
)
def test_classifier_agrees_with_the_definition_anywhere(v4: int, v6: int, mapped: int, which: int) -> None:
    allowlist = ALLOWLISTS[which]
    fast = Classifier(allowlist, ranges.ALL)
    for ip in (
        ipaddress.IPv4Address(v4),
        ipaddress.IPv6Address(v6),
        ipaddress.IPv6Address((0xFFFF << 32) | mapped),
    ):
        assert fast(ip) is _skip_slowly(ip, allowlist, ranges.ALL), ip


def test_classifier_kinds() -> None:
    fast = Classifier((ipaddress.ip_network("45.155.205.0/24"),), ranges.ALL)
    assert fast(ipaddress.ip_address("45.155.205.7")) is Skip.ALLOWLISTED
    assert fast(ipaddress.ip_address("104.16.0.1")) is Skip.CLOUDFLARE
    assert fast(ipaddress.ip_address("10.1.2.3")) is Skip.ALLOWLISTED
    assert fast(ipaddress.ip_address("2001:db8::1")) is Skip.ALLOWLISTED
    assert fast(ipaddress.ip_address("45.155.206.1")) is Skip.NONE


# --------------------------------------------------------------------------------------------- notes


def _slow_format(tag: str, lease: Lease) -> str | None:
    """format_note before its fast path (the general loop, unchanged)."""
    fixed = (
        f" host={','.join(notes.host_set(lease.hosts))} since={_slow_time(lease.since)}"
        f" until={_slow_time(lease.until) if lease.until else notes.PERMANENT}"
    )
    asn = notes.normal_asn(lease.asn)
    optional = (f" asn={asn}" + (f" cc={cc}" if (cc := notes.normal_cc(lease.cc)) else "")) if asn else ""
    names = [notes._clean(j) for j in lease.jails]
    for extra in (optional, ""):
        room = notes.MAX_NOTES - len(tag) - len(" jail=") - len(fixed) - len(extra)
        shown = ",".join(names)
        kept = list(names)
        while len(shown) > room and kept:
            kept.pop()
            shown = ",".join([*kept, f"+{len(names) - len(kept)}"])
        if len(shown) <= room:
            return f"{tag} jail={shown}{fixed}{extra}"
    return None


def _slow_time(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat() + "Z"


names = st.text(st.characters(codec="utf-8"), min_size=0, max_size=40)
moments = st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9998, 1, 1), timezones=st.just(UTC))
leases = st.builds(
    Lease,
    jails=st.lists(names, max_size=40).map(tuple),
    hosts=st.lists(names, min_size=1, max_size=12).map(tuple),
    since=moments,
    until=st.none() | moments,
    asn=st.none() | st.sampled_from(["AS13335", "24940", "as1", "NA", ""]) | names,
    cc=st.none() | st.sampled_from(["DE", "us", "X"]) | names,
)


@settings(max_examples=300)
@given(lease=leases, tag=st.sampled_from([TAG, "fail2ban", "Blocked by fail2ban on"]))
def test_format_note_fast_path_is_the_general_one(lease: Lease, tag: str) -> None:
    assert format_note(tag, lease) == _slow_format(tag, lease)


@settings(max_examples=300)
@given(lease=leases)
def test_parse_note_fast_path_is_the_general_one(lease: Lease) -> None:
    note = format_note(TAG, lease)
    if note is None:
        return
    fields = note[len(TAG) :]
    for rest in (
        fields,
        fields.replace(" ", "  "),
        fields + " extra=1",
        fields.replace("jail=", "jail=a=b,"),
        re.sub(r" host=\S+", lambda m: m.group().upper().replace("HOST=", "host="), fields),  # another's case
    ):
        assert parse_note(TAG + rest, TAG) == notes._parse_fields(rest), rest


@given(moment=moments)
def test_format_time_and_parse_time(moment: datetime) -> None:
    text = notes.format_time(moment)
    assert text == _slow_time(moment)
    assert notes.parse_time(text) == moment.replace(microsecond=0)


@pytest.mark.parametrize(
    "text", ["2026-11-21T24:00:00Z", "2026-02-30T00:00:00Z", "2026-11-21T10:00:00+00:00", "20261121T100000Z"]
)
def test_parse_time_refuses_what_it_refused(text: str) -> None:
    with pytest.raises(ValueError):
        notes.parse_time(text)


# ---------------------------------------------------------------------------------- fail2ban reads


def test_since_is_kept_to_the_second() -> None:
    lease = Lease(("sshd",), ("web1",), T0 + timedelta(microseconds=999_999), None)
    note = format_note(TAG, lease)
    assert note is not None and "since=2026-11-21T10:00:00Z" in note
