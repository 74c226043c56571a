"""The --report pipeline's one-pass readers against the slow definitions they stand in for (issue 18).

fail2ban's ban lines are read in one regular-expression pass, with a line-by-line reading as the definition
(and as the reader that names a wrong line). The report's rows are ordered by a C-keyed sort and grouping,
and escaped a column at a time.
"""

from __future__ import annotations

from datetime import tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconcile.core import render
from reconcile.core.changes import Action, Change
from reconcile.core.model import Scope, ScopeKind
from reconcile.core.sanitize import escape_line
from reconcile.fail2ban import parse

NEW_YORK = ZoneInfo("America/New_York")
LINE = "{value} \t2026-11-21 04:47:42 + 3600 = 2026-11-21 05:47:42"


def _by_lines(jail: str, output: str, tz: tzinfo) -> list[object]:
    """parse_banip_with_time's definition: every line on its own."""
    text = output.rstrip("\n")
    return [] if not text.strip() else list(parse._parse_lines(jail, text, tz))


@pytest.mark.parametrize(
    "output",
    [
        LINE.format(value="203.0.113.5") + "\n",
        # a value holding the separator, and one followed by what looks like a time but is not one
        LINE.format(value="a \tb") + "\n",
        LINE.format(value="x \t2026-11-21 junk") + "\n",
        LINE.format(value="x \t2026-11-21 04:47:42 + 1 = 2026-11-21 04:47:43 y") + "\n",
        "198.18.0.1 \t2026-11-21 04:48:13 + -1 = 9999-12-31 23:59:59\n",
        "198.18.0.1 \t2026-03-08 02:30:00 + 60 = 2026-03-08 03:31:00\n",  # in New York's DST gap
        "198.18.0.1 \t2026-11-01 01:30:00 + 60 = 2026-11-01 01:31:00\n",  # in its fold
        "198.18.0.1 \t9999-12-30 23:59:00 + 86400 = 9999-12-31 23:59:59\n",  # ends past year 9999
        "\n",
    ],
)
def test_one_pass_parse_is_the_line_by_line_parse(output: str) -> None:
    assert parse.parse_banip_with_time("sshd", output, NEW_YORK) == _by_lines("sshd", output, NEW_YORK)


@pytest.mark.parametrize(
    "output",
    [
        LINE.format(value="1.2.3.4") + "\n\n" + LINE.format(value="1.2.3.5") + "\n",  # a blank line
        LINE.format(value="1.2.3.4") + "\nnot a ban line\n",
        LINE.format(value="1.2.3.4") + "\r\n" + LINE.format(value="1.2.3.5") + "\n",
        "1.2.3.4 \t2026-13-21 04:47:42 + 3600 = 2026-13-21 05:47:42\n",  # month 13
        "1.2.3.4 \t2026-11-21 04:47:42 + 3600 = 2026-11-21\n",
    ],
)
def test_one_pass_parse_fails_as_the_line_by_line_parse(output: str) -> None:
    with pytest.raises(ValueError) as slow:
        _by_lines("sshd", output, NEW_YORK)
    with pytest.raises(ValueError) as fast:
        parse.parse_banip_with_time("sshd", output, NEW_YORK)
    assert str(fast.value) == str(slow.value)


TIME = st.sampled_from(
    ["2026-11-21 04:47:42", "2026-11-01 01:30:00", "9999-12-31 23:59:59", "2026-1-1 0:0:0"]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(st.sampled_from("1. \tab:\r-2"), min_size=0, max_size=8),
            TIME,
            st.sampled_from(["3600", "-1", "0", "x"]),
            TIME,
        ),
        min_size=1,
        max_size=6,
    )
)
def test_one_pass_parse_agrees_on_odd_lines(lines: list[tuple[str, str, str, str]]) -> None:
    output = "".join(f"{value} \t{start} + {seconds} = {end}\n" for value, start, seconds, end in lines)
    try:
        expected: object = _by_lines("manual", output, NEW_YORK)
    except (ValueError, OverflowError) as exc:  # a start in year 9999 overflows in New York: both say so
        expected = repr(exc)
    try:
        got: object = parse.parse_banip_with_time("manual", output, NEW_YORK)
    except (ValueError, OverflowError) as exc:
        got = repr(exc)
    assert got == expected


# --- the report's rows ----------------------------------------------------------------------------------

SCOPES = [
    None,
    Scope(ScopeKind.ZONE, "b" * 32),
    Scope(ScopeKind.ZONE, "a" * 32),
    Scope(ScopeKind.ACCOUNT, "c"),
]
CHANGE = st.builds(
    Change,
    action=st.sampled_from(list(Action)),
    value=st.sampled_from(["45.0.0.1", "45.0.0.10", "45.0.0.2", "2001:db8::1", "x"]),
    reason=st.sampled_from(["a", "b"]),  # ties on the order's keys keep the plan's order: told apart here
    scope=st.sampled_from(SCOPES),
)


@settings(max_examples=300)
@given(st.lists(CHANGE, max_size=12))
def test_row_order_is_the_definition(changes: list[Change]) -> None:
    order = {
        a: n for n, a in enumerate([Action.ADD, Action.RENEW, Action.EXPIRE, Action.FOREIGN, Action.SKIP])
    }
    order[Action.KEEP] = 5

    def key(change: Change) -> tuple[int, str, str]:
        return order[change.action], str(change.scope or ""), change.value

    assert [id(c) for c in render.sorted_rows(changes)] == [id(c) for c in sorted(changes, key=key)]


CELL = st.text(st.sampled_from("ab \t\n\x1b\u200b\u00e9"), max_size=4)


@settings(max_examples=300)
@given(st.integers(1, 4).flatmap(lambda n: st.lists(st.lists(CELL, min_size=n, max_size=n), max_size=5)))
def test_rows_are_escaped_as_cell_by_cell(rows: list[list[str]]) -> None:
    expected = [[cell if cell.isprintable() else escape_line(cell) for cell in row] for row in rows]
    assert render.escaped(rows) == expected
