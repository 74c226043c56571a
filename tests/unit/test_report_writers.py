"""The report's writers (issue 18): the linear table writer against tabulate, which it replaced, and the JSON
writer against `json.dumps(indent=2)`, character for character; and the planner's and merge's fast paths
against the definitions they stand in for.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tabulate import tabulate

from reconcile.core import json_text, render, report_json
from reconcile.core.addresses import compressed
from reconcile.core.changes import Action, Change, Membership, Owner, OwnerKind, Plan, planned
from reconcile.core.merge import address_of
from reconcile.core.model import Ban, Rule, Scope, ScopeKind
from reconcile.core.notes import Lease
from reconcile.core.sanitize import escape_line
from reconcile.core.table import display_width, simple

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ZONE = Scope(ScopeKind.ZONE, "023e105f4ecef8ad9ca31a8372d0c353")
OTHER_ZONE = Scope(ScopeKind.ZONE, "99999999999999999999999999999999")


def _tabulate(headers: Any, rows: Any, **options: Any) -> str:
    return tabulate(rows, headers=headers, tablefmt="simple", **options)


def _ban(ip: str, *jails: str, hours: int | None = 1) -> Ban:
    since = NOW - timedelta(minutes=5)
    return Ban(
        ipaddress.ip_address(ip), jails, since, None if hours is None else since + timedelta(hours=hours)
    )


def _rule(ip: str, scope: Scope = ZONE, mode: str = "block") -> Rule:
    return Rule(
        "f" * 32, scope, "ip6" if ":" in ip else "ip", ip, mode, "notes", NOW - timedelta(days=2, hours=3)
    )


def _plan() -> Plan:
    """A report's worth of every kind of row: both families, several jails, rules, two zones, AS names."""
    lease = Lease(("sshd",), ("web1",), NOW, NOW + timedelta(hours=1))
    hosts = Owner(OwnerKind.HOSTS, ("web1", "web2"))
    changes = [
        Change(Action.ADD, "45.155.205.233", "banned in sshd", ZONE, _ban("45.155.205.233", "sshd"),
               lease=lease, jails=("sshd",), ip=ipaddress.ip_address("45.155.205.233"), asn="AS14061"),
        Change(Action.ADD, "2a06:4880::1", "banned in recidive, sshd", ZONE,
               _ban("2a06:4880::1", "recidive", "sshd", hours=None), lease=lease, jails=("recidive", "sshd"),
               ip=ipaddress.ip_address("2a06:4880::1")),
        Change(Action.RENEW, "45.155.205.1", "joining web2", OTHER_ZONE, _ban("45.155.205.1", "sshd"),
               _rule("45.155.205.1", OTHER_ZONE), hosts, lease, jails=("sshd",),
               ip=ipaddress.ip_address("45.155.205.1"), membership=Membership.JOIN, asn="AS14061"),
        Change(Action.EXPIRE, "45.155.205.2", "no longer banned", ZONE, None, _rule("45.155.205.2"), hosts,
               ip=ipaddress.ip_address("45.155.205.2")),
        Change(Action.FOREIGN, "45.155.205.3", "an untagged rule already covers it", ZONE,
               _ban("45.155.205.3", "nginx-http-auth"), _rule("45.155.205.3"), Owner(OwnerKind.UNTAGGED),
               jails=("nginx-http-auth",), ip=ipaddress.ip_address("45.155.205.3"), asn="AS9009"),
        Change(Action.SKIP, "not-an-ip", "not a single IP address", jails=("sshd",)),
        Change(Action.KEEP, "45.155.205.4", "up to date", ZONE, _ban("45.155.205.4", "sshd"),
               _rule("45.155.205.4"), Owner(OwnerKind.HOSTS, ("web1",)), jails=("sshd",),
               ip=ipaddress.ip_address("45.155.205.4")),
    ]  # fmt: skip
    return Plan(tuple(changes), {ZONE: 3, OTHER_ZONE: 1})


NAMES = {"AS14061": "DIGITALOCEAN-ASN", "AS9009": "M247"}


def test_the_report_table_is_what_tabulate_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole report (counts, top networks with its number column, the rows with AS and zone columns)
    as the fast writer prints it and as tabulate printed the same cells."""
    ours = render.table(_plan(), NOW, names=NAMES)
    monkeypatch.setattr(render, "simple_table", _tabulate)
    assert ours == render.table(_plan(), NOW, names=NAMES)
    assert "top networks:" in ours and "DIGITALOCEAN-ASN" in ours  # both tables were compared


def test_one_zone_without_as_is_what_tabulate_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = Plan(tuple(dataclasses.replace(c, asn=None, scope=c.scope and ZONE) for c in _plan().changes))
    ours = render.table(plan, NOW)
    monkeypatch.setattr(render, "simple_table", _tabulate)
    assert ours == render.table(plan, NOW)


# Cells as a report can hold them, minus what tabulate would read as a number (see core/table.py).
_CELL = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12)


@settings(max_examples=100)
@given(
    headers=st.lists(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=8),
                     min_size=1, max_size=5),
    data=st.data(),
)  # fmt: skip
def test_text_cells_line_up_as_tabulate_lined_them_up(headers: list[str], data: st.DataObject) -> None:
    rows = data.draw(st.lists(st.lists(_CELL, min_size=len(headers), max_size=len(headers)), max_size=6))
    assert simple(headers, rows) == _tabulate(headers, rows, disable_numparse=True)


@settings(max_examples=200)
@given(rows=st.lists(st.tuples(_CELL, st.integers(0, 10**9)), min_size=1, max_size=6))
def test_a_column_of_numbers_is_right_aligned_as_tabulate_did(rows: list[tuple[str, int]]) -> None:
    table: list[list[str | int | None]] = [[text, number] for text, number in rows]
    assert simple(["AS", "banned"], table) == _tabulate(["AS", "banned"], table, disable_numparse=[0])


def test_text_that_looks_like_a_number_is_printed_as_it_is() -> None:
    """tabulate rewrote `007` as `7` and right-aligned it; a jail or host name is text."""
    out = simple(["jails", "x"], [["007", "a"], ["1e5", "b"]])
    assert out.splitlines()[2:] == ["007      a", "1e5      b"]


def test_a_cell_with_a_line_break_spans_lines_as_in_tabulate() -> None:
    rows = [["a\nbbb", "x"], ["cc", "y\nz"]]
    assert simple(["h1", "h2"], rows) == _tabulate(["h1", "h2"], rows)


def test_wide_characters_keep_the_columns_lined_up() -> None:
    """Display width, not characters: tabulate (without wcwidth) pushed the next column out of line."""
    out = simple(["AS", "name", "banned"], [["AS2516", "日本テレコム", 7], ["AS13335", "CLOUDFLARENET", 12]])
    lines = out.splitlines()
    starts = {display_width(line[: line.index(number)]) + len(number) for line, number in
              zip(lines[2:], ("7", "12"), strict=True)}  # fmt: skip
    assert starts == {display_width(lines[0])}  # every number ends where the right-aligned header ends
    assert display_width("日本テレコム") == 12 and display_width("e\u0301") == 1


def test_no_rows_is_the_header_alone() -> None:
    assert simple(["IP", "jails"], []) == _tabulate(["IP", "jails"], [])


# --- JSON ---------------------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=200)
@given(value=_JSON)
def test_json_text_is_json_dumps_indented(value: Any) -> None:
    assert json_text.dumps(value) == json.dumps(value, indent=2)


def _slow_rows(value: dict[str, Any], rows: str) -> str:
    """dumps_with_rows by its definition: json.dumps(indent=2), each row json.dumps(row) on a line."""
    marks = [f"\x00row {i}\x00" for i in range(len(value[rows]))]
    text = json.dumps({**value, rows: marks}, indent=2)
    for mark, row in zip(marks, value[rows], strict=True):
        text = text.replace(json.dumps(mark), json.dumps(row, separators=(", ", ": ")), 1)
    return text


@settings(max_examples=100)
@given(
    top=st.dictionaries(st.text(max_size=6), _JSON, max_size=4),
    rows=st.lists(st.dictionaries(st.text(max_size=6), _JSON, max_size=5), max_size=4),
)
def test_json_rows_one_line_each_are_json_dumps_indented_with_compact_rows(
    top: dict[str, Any], rows: list[dict[str, Any]]
) -> None:
    value = {**top, "changes": rows}
    text = json_text.dumps_with_rows(value, "changes")
    assert text == _slow_rows(value, "changes")
    if rows:
        assert len(text.splitlines()) == len(
            json.dumps({**top, "changes": [0] * len(rows)}, indent=2).splitlines()
        )


def test_the_report_json_is_what_json_dumps_wrote() -> None:
    plan = _plan()
    plan = dataclasses.replace(
        plan, changes=(*plan.changes, Change(Action.SKIP, "\x1b[31m\u202e\ud800", "x"))
    )
    ours = report_json.to_json(
        plan, NOW, render.Stats(3, 1.25), unsafe=["too many"], host_id="web1", names=NAMES
    )
    document = json.loads(ours)
    # Character for character what json.dumps writes of the document it holds, a row per line...
    assert ours == _slow_rows(document, "changes")
    # ...and every row, written directly or not, is the row dict programs read.
    rows = [
        report_json._item(c, str(c.scope) if c.scope else None, NOW, NAMES, {})
        for c in render.sorted_rows(plan.changes)
    ]
    assert document["changes"] == rows
    assert any(c.rule is None for c in plan.changes) and any(c.rule is not None for c in plan.changes)
    assert len(document["changes"]) == len(plan.changes)
    # The contract programs read: the keys and their order (a row per line is for the person).
    assert list(document) == [
        "generated_at", "host_id", "counts", "counts_by_scope", "top_networks", "incomplete_scopes",
        "unsafe", "api_requests", "seconds", "changes",
    ]  # fmt: skip
    assert list(document["changes"][0]) == [
        "ip", "scope", "action", "reason", "jails", "banned_since", "ban_ends", "rule", "hosts", "notes",
        "asn", "as_name",
    ]  # fmt: skip
    lines = ours.splitlines()
    assert sum(1 for line in lines if line.startswith('    {"ip": ')) == len(plan.changes)


def test_rows_sharing_time_objects_show_each_rows_own_times() -> None:
    """The JSON writer formats each time object once per report (as fail2ban's reader shares them among
    bulk bans): rows sharing one, rows with equal times in distinct objects, another zone, a permanent ban
    and a ban with none all show what `_item` holds for their own ban."""
    shared_since, shared_until = NOW - timedelta(hours=2), NOW + timedelta(hours=1)
    plus_two = timezone(timedelta(hours=2))
    times: list[tuple[datetime, datetime | None]] = [
        (shared_since, shared_until),
        (shared_since, shared_until),
        (NOW - timedelta(hours=2), NOW + timedelta(hours=1)),  # equal values, other objects
        (shared_since, None),  # permanent
        ((NOW - timedelta(minutes=7)).astimezone(plus_two), shared_until),
        (NOW - timedelta(days=400), NOW - timedelta(days=399)),
    ]
    changes = [
        Change(Action.ADD, f"192.0.2.{n}", "banned in sshd", ZONE,
               Ban(ipaddress.ip_address(f"192.0.2.{n}"), ("sshd",), since, until), jails=("sshd",))
        for n, (since, until) in enumerate(times, 1)
    ] + [Change(Action.EXPIRE, "192.0.2.99", "no longer banned", ZONE, None)]  # fmt: skip
    plan = Plan(tuple(changes), {ZONE: 1})
    document = json.loads(report_json.to_json(plan, NOW, render.Stats(0, 0.0)))
    rows = [report_json._item(c, str(ZONE), NOW, {}, {}) for c in render.sorted_rows(plan.changes)]
    assert document["changes"] == rows
    shown = {row["ip"]: (row["banned_since"], row["ban_ends"]) for row in document["changes"]}
    assert shown["192.0.2.4"] == ("2026-12-01T10:00:00Z", "permanent")
    assert shown["192.0.2.5"] == ("2026-12-01T11:53:00Z", "2026-12-01T13:00:00Z")
    assert shown["192.0.2.6"] == ("2025-10-27T12:00:00Z", "2025-10-28T12:00:00Z")
    assert shown["192.0.2.99"] == (None, None)


def test_report_cells_skip_the_escape_only_when_it_changes_nothing() -> None:
    for code in range(0x110000):
        char = chr(code)
        if escape_line(char) != char:
            assert not char.isprintable(), hex(code)


@given(moment=st.datetimes(timezones=st.just(UTC)))
def test_table_times_are_strftimes(moment: datetime) -> None:
    assert render._when(moment) == moment.strftime("%Y-%m-%d %H:%M:%SZ")


def test_json_text_refuses_what_json_refuses() -> None:
    for value in ({1: "a"}, {"a": object()}, {"a": {1, 2}}):
        with pytest.raises(TypeError):
            json_text.dumps(value)


# --- fast paths -----------------------------------------------------------------------------------------


@settings(max_examples=100)
@given(
    action=st.sampled_from(Action),
    membership=st.none() | st.sampled_from(Membership),
    asn=st.none() | st.just("AS1"),
)
def test_planned_is_the_change_the_dataclass_makes(
    action: Action, membership: Membership | None, asn: str | None
) -> None:
    ban = _ban("45.0.0.1", "sshd")
    owner = Owner(OwnerKind.HOSTS, ("web1",))
    args = (action, "45.0.0.1", "r", ZONE, ban, _rule("45.0.0.1"), owner, None, "n", ("sshd",), ban.ip, asn,
            membership)  # fmt: skip
    fast, slow = planned(*args), Change(*args)
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert vars(fast) == {f.name: getattr(slow, f.name) for f in dataclasses.fields(Change)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.reason = "changed"  # type: ignore[misc]


@settings(max_examples=200)
@given(v4=st.integers(0, 2**32 - 1), v6=st.integers(0, 2**128 - 1))
def test_compressed_is_ipaddress_compressed(v4: int, v6: int) -> None:
    for ip in (ipaddress.IPv4Address(v4), ipaddress.IPv6Address(v6)):
        assert compressed(ip) == ip.compressed


def _reference(value: str) -> Any:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is None and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return None if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None else ip


@settings(max_examples=1000)
@given(
    value=st.text(st.sampled_from("0123456789.:af% \n٣"), max_size=17)
    | st.lists(st.integers(-1, 300).map(str) | st.sampled_from(["00", "01", "0x1", " 1", "1 "]), min_size=3,
               max_size=5).map(".".join)
)  # fmt: skip
def test_the_fast_ipv4_parse_accepts_exactly_what_ipaddress_accepts(value: str) -> None:
    assert address_of(value) == _reference(value)


def test_table_cells_with_control_and_bidi_characters_are_escaped() -> None:
    plan = dataclasses.replace(
        _plan(),
        changes=(
            *_plan().changes,
            Change(Action.SKIP, "\x1b[2Jx\u202e", "not a single IP address", jails=("ss\x9bh\td",)),
        ),
    )
    text = render.table(plan, NOW)
    assert "\\x1b[2Jx\\u202e" in text and "ss\\x9bh\\x09d" in text
    assert not any(ch in text for ch in "\x1b\x9b\u202e\t")
