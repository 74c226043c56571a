"""The planner's caches and fast constructors (issue 18) against what they stand in for.

Each must give the same value as the plain code for every input: a lease or note built without its
dataclass __init__, a host set's text cached by tuple, the legacy notes' pre-check before their regexes,
and the collector's promotion of what a pass allocated (a cycle made meanwhile is still collected).
"""

from __future__ import annotations

import gc
import weakref
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from reconcile.core import notes, plan_text, sanitize
from reconcile.core.collector import collector_paused
from reconcile.core.notes import Lease, Note, NoteKind, make_lease

names = st.text(st.characters(codec="utf-8"), max_size=30)
moments = st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9998, 1, 1), timezones=st.just(UTC))
name_tuples = st.lists(names, max_size=6).map(tuple)


@settings(max_examples=200)
@given(
    jails=name_tuples,
    hosts=name_tuples,
    since=moments,
    until=st.none() | moments,
    asn=st.none() | names,
    cc=st.none() | names,
)
def test_fast_lease_and_note_equal_the_dataclasses(
    jails: tuple[str, ...],
    hosts: tuple[str, ...],
    since: datetime,
    until: datetime | None,
    asn: str | None,
    cc: str | None,
) -> None:
    fast = make_lease(jails, hosts, since, until, asn, cc)
    assert fast == Lease(jails, hosts, since, until, asn, cc)
    assert hash(fast) == hash(Lease(jails, hosts, since, until, asn, cc))
    assert make_lease(jails, hosts, since, until) == Lease(jails, hosts, since, until)
    note = notes._lease_note(jails, hosts, since, until, asn, cc)
    assert note == Note(NoteKind.LEASE, jails, hosts, since, until, asn, cc)
    assert repr(note) == repr(Note(NoteKind.LEASE, jails, hosts, since, until, asn, cc))


# What a legacy note may start with, including the letters IGNORECASE folds (Kelvin K, dotless and dotted i).
legacy_texts = st.text(
    st.sampled_from(list("blockedyfain2 BLOCKEDYFAIN\u212a\u0131\u0130/0123456789:()ASN")), max_size=60
)


@settings(max_examples=1000)
@given(
    text=legacy_texts
    | legacy_texts.map(lambda t: "Blocked by fail2ban on " + t)
    | legacy_texts.map(lambda t: "fail2ban " + t)
)
def test_legacy_pre_check_never_hides_a_legacy_note(text: str) -> None:
    assert notes._parse_legacy(text) is None or notes._maybe_legacy(text)


def test_legacy_pre_check_examples() -> None:
    for text in (
        "Blocked by fail2ban on 11/21/26 14:03:07 (ASN: AS13335)",
        "BLOCKED BY FAIL2BAN ON 11/21/26 14:03:07",
        "bloc\u212aed by fa\u0131l2ban on 11/21/26 14:03:07",
        "Fail2Ban sshd",
        "fa\u0131l2ban",
        "fa\u0130l2ban",
    ):
        assert notes._maybe_legacy(text), text
        assert notes._parse_legacy(text) is not None, text
    assert not notes._maybe_legacy("Blocked by fail2ban jail=sshd host=web1 since=x until=permanent")


@given(hosts=st.lists(names, max_size=8), width=st.integers(1, 80))
def test_host_text_cached_by_tuple_is_the_plain_text(hosts: list[str], width: int) -> None:
    assert sanitize.hosts_text(tuple(hosts), width) == sanitize._hosts_text_of(hosts, width)
    assert sanitize.hosts_text(hosts, width) == sanitize._hosts_text_of(hosts, width)


@given(a=name_tuples, b=name_tuples)
def test_planner_reason_and_union_caches(a: tuple[str, ...], b: tuple[str, ...]) -> None:
    assert plan_text.jail_union(a, b) == tuple(sorted({*a, *b}))
    assert plan_text.banned_in(a) == f"banned in {', '.join(a)}"
    covered = f"shared with {sanitize.hosts_text(a)}; the lease covers this host's ban"
    assert plan_text.covered_reason(a) == covered


class _Node:
    other: object = None


def test_collector_resumes_and_still_collects_a_cycle_made_while_paused() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
    assert gc.isenabled()
    gc.collect()
    assert gone() is None
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # left as it was
    finally:
        gc.enable()
