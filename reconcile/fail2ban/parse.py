"""fail2ban's answers turned into values: jail lists, ban lines in fail2ban's time zone, the database's path
and a jail's ban times. No IO (merging bans per address is core/merge.py's)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, tzinfo

from dateutil import tz as dateutil_tz

from reconcile.core.model import BanEntry, ban_entry
from reconcile.fail2ban.restore import JailTimes

_NUMBER_LINE = re.compile(r"\|- Number of jail:\s*(\d+)")
_LIST_LINE = re.compile(r"`- Jail list:(.*)")
_TIME = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"
# `START + SECONDS = END`, the part of a ban line that bulk bans share.
_TIMES_TEXT = rf"({_TIME}) \+ (-?\d+) = ({_TIME})"
_TIMES = re.compile(_TIMES_TEXT)
# `IP<SPACE><TAB>START + SECONDS = END` (banmanager.py getBanList). The IP field is whatever was banned,
# spaces included, so it runs up to the separator rather than being \S+. Groups read by position.
_BAN_LINE = re.compile(rf"(.+?) \t{_TIMES_TEXT}")
# The same for every line of an answer at once, loosely: the value, and the rest of the line, which bans
# share and which is checked against _TIMES once per distinct text. Where that rest is right, the split is
# _BAN_LINE's: both take the first ' \t' after which the line can be read (_BAN_LINE's times start with a
# digit and a year, as this does), and a check of the rest decides the same.
_BAN_LINES = re.compile(r"^(.+?) \t(\d{4}-.*)$", re.MULTILINE)
# fail2ban prints its time stamps truncated to the second and its ban time with %d, so END may trail
# START + SECONDS by a second (more after a prolonged re-ban); enough slack to tell two DST folds apart.
_END_SLACK = timedelta(seconds=5)
# `fail2ban-client get dbfile` (client/beautifier.py): a path, or "disabled" for `dbfile = None`.
_DBFILE = re.compile(r"Current database file is:\n`- (?P<path>.+)")
_DB_DISABLED = "Database currently disabled"


def parse_jail_list(status_output: str) -> tuple[str, ...]:
    """Jail names from `fail2ban-client status`, in fail2ban's (sorted) order."""
    lines = status_output.rstrip("\n").split("\n")
    if len(lines) != 3 or lines[0] != "Status":
        raise ValueError(f"expected 'Status', a jail count and a jail list, got {_quote(status_output)}")
    number = _NUMBER_LINE.fullmatch(lines[1])
    if number is None:
        raise ValueError(f"expected '|- Number of jail:', got {_quote(lines[1])}")
    listing = _LIST_LINE.fullmatch(lines[2])
    if listing is None:
        raise ValueError(f"expected '`- Jail list:', got {_quote(lines[2])}")
    names_text = listing.group(1).strip()
    names = tuple(name.strip() for name in names_text.split(",")) if names_text else ()
    if any(not name for name in names):
        raise ValueError(f"empty jail name in {_quote(lines[2])}")
    if len(names) != int(number.group(1)):
        raise ValueError(f"jail count {number.group(1)} does not match the jail list {_quote(lines[2])}")
    return names


def parse_banip_with_time(jail: str, output: str, tz: tzinfo) -> list[BanEntry]:
    """Entries of `fail2ban-client get JAIL banip --with-time`; times are in fail2ban's time zone `tz`."""
    text = output.rstrip("\n")
    if not text.strip():
        return []  # fail2ban prints one empty line when the jail holds no bans
    # Every line in one C call (40,000 fullmatch calls, with their groups, were most of the parse). A match
    # never spans lines, so as many matches as lines means every line matched; otherwise, or when a time
    # does not read (its error may not be the first line's), the line-by-line reading decides, as ever.
    rows = _BAN_LINES.findall(text)
    if len(rows) == text.count("\n") + 1:
        try:
            return _entries(jail, rows, tz)
        except (ValueError, ArithmeticError):
            pass
    return _parse_lines(jail, text, tz)


def _entries(jail: str, rows: list[tuple[str, str]], tz: tzinfo) -> list[BanEntry]:
    """Entries of (value, "START + SECONDS = END") pairs; each distinct time text is read once."""
    times = {}
    for key in {key for _, key in rows}:
        m = _TIMES.fullmatch(key)
        if m is None:  # the line-by-line reading says which line, and how
            raise ValueError(key)
        times[key] = _ban_times(m.groups(), tz)
    return [ban_entry(jail, value, *times[key]) for value, key in rows]


def _parse_lines(jail: str, text: str, tz: tzinfo) -> list[BanEntry]:
    """parse_banip_with_time's definition, a line at a time: the error names the first line that is wrong."""
    entries = []
    # bulk bans share their times: each distinct (START, SECONDS, END) is localized and added up once
    times: dict[tuple[str, ...], tuple[datetime, datetime | None]] = {}
    for number, line in enumerate(text.split("\n"), 1):
        m = _BAN_LINE.fullmatch(line)
        if m is None:
            raise ValueError(
                f"jail {jail}: line {number} {_quote(line)} is not 'IP \\tSTART + SECONDS = END'"
            )
        try:
            entries.append(_entry(jail, m, tz, times))
        except ValueError as exc:
            raise ValueError(f"jail {jail}: line {number} {_quote(line)}: {exc}") from None
    return entries


def parse_dbfile(output: str) -> str | None:
    """The database path from `fail2ban-client get dbfile`; None when fail2ban keeps no database file."""
    text = output.strip("\n")
    if text == _DB_DISABLED:
        return None
    m = _DBFILE.fullmatch(text)
    if m is None:
        raise ValueError(f"expected 'Current database file is:' or {_DB_DISABLED!r}, got {_quote(output)}")
    path = m.group("path")
    return None if path == ":memory:" else path  # an in-memory database is fail2ban's own


def parse_jail_times(bantime: str, increment: str, maxtime: str) -> JailTimes:
    """`get JAIL bantime`, `bantime.increment` and `bantime.maxtime` (unset ones print None)."""
    flag = increment.strip()
    if flag not in ("True", "False", "None"):
        raise ValueError(f"bantime.increment: expected True, False or None, got {_quote(increment)}")
    cap = maxtime.strip()
    try:
        return JailTimes(int(bantime.strip()), flag == "True", None if cap == "None" else int(cap))
    except ValueError:
        raise ValueError(
            f"expected whole seconds for bantime {_quote(bantime)} and bantime.maxtime {_quote(maxtime)}"
        ) from None


def _quote(text: str, limit: int = 200) -> str:
    """repr() of fail2ban's text for an error message, cut short: a junk answer can be megabytes."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "…"


def _entry(
    jail: str, m: re.Match[str], tz: tzinfo, times: dict[tuple[str, ...], tuple[datetime, datetime | None]]
) -> BanEntry:
    value, *fields = m.groups()  # value, start, seconds, end: by position, a lookup per name cost more
    key = tuple(fields)
    known = times.get(key)
    if known is None:
        known = times[key] = _ban_times(fields, tz)
    return ban_entry(jail, value, *known)


def _ban_times(fields: Sequence[str], tz: tzinfo) -> tuple[datetime, datetime | None]:
    """A ban's start and end in UTC from fail2ban's (START, SECONDS, END) texts (end None: permanent)."""
    start_text, seconds_text, end_text = fields
    seconds = int(seconds_text)
    start_wall = datetime.fromisoformat(start_text)
    if seconds == -1:  # permanent (ticket.py); END is the 9999-12-31 placeholder
        return _localize(start_wall, tz, None), None
    start = _localize(start_wall, tz, (seconds, datetime.fromisoformat(end_text)))
    return start, plus_seconds(start, seconds)


def _localize(wall: datetime, tz: tzinfo, check: tuple[int, datetime] | None) -> datetime:
    """A wall-clock time in `tz` as UTC.

    fail2ban drops the DST fold when it formats a time, so an ambiguous START has two readings: take the
    one whose START + SECONDS shows as END, else the later one (the ban then never ends too early).
    A time that does not exist in `tz` (a time zone differing from the server's) is moved past the gap.
    """
    aware = wall.replace(tzinfo=tz)
    # both folds, then keep those that show as `wall` again: two if ambiguous, none if in a gap
    readings = sorted({aware.astimezone(UTC), aware.replace(fold=1).astimezone(UTC)})
    readings = [r for r in readings if r.astimezone(tz).replace(tzinfo=None) == wall]
    if not readings:
        return dateutil_tz.resolve_imaginary(aware).astimezone(UTC)
    if len(readings) > 1 and check is not None:
        seconds, end_wall = check
        fitting = [r for r in readings if _shows_as(plus_seconds(r, seconds), tz, end_wall)]
        if len(fitting) == 1:
            return fitting[0]
    return readings[-1]


def _shows_as(instant: datetime | None, tz: tzinfo, wall: datetime) -> bool:
    if instant is None:
        return False
    shown = instant.astimezone(tz).replace(tzinfo=None)
    return timedelta(0) <= wall - shown <= _END_SLACK


def plus_seconds(start: datetime, seconds: int) -> datetime | None:
    """START + SECONDS in UTC (not wall-clock arithmetic); None if past year 9999, i.e. forever."""
    try:
        return start + timedelta(seconds=seconds)
    except OverflowError:
        return None
