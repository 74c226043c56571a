"""fail2ban's answers turned into values: jail lists, ban lines, and bans merged per address. No IO."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from dateutil import tz as dateutil_tz

from reconcile.model import Ban, BanEntry, IPAddress

_NUMBER_LINE = re.compile(r"\|- Number of jail:\s*(\d+)")
_LIST_LINE = re.compile(r"`- Jail list:(.*)")
_TIME = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"
# `IP<SPACE><TAB>START + SECONDS = END` (banmanager.py getBanList). The IP field is whatever was banned,
# spaces included, so it runs up to the separator rather than being \S+.
_BAN_LINE = re.compile(rf"(?P<value>.+?) \t(?P<start>{_TIME}) \+ (?P<seconds>-?\d+) = (?P<end>{_TIME})")
# fail2ban prints its time stamps truncated to the second and its ban time with %d, so END may trail
# START + SECONDS by a second (more after a prolonged re-ban); enough slack to tell two DST folds apart.
_END_SLACK = timedelta(seconds=5)
# `fail2ban-client get dbfile` (client/beautifier.py): a path, or "disabled" for `dbfile = None`.
_DBFILE = re.compile(r"Current database file is:\n`- (?P<path>.+)")
_DB_DISABLED = "Database currently disabled"
# A live ban's printed START is truncated to the second, its stored timeofban rounded: they differ by <= 1 s.
_SAME_START = timedelta(seconds=2)
# UTC offsets in use are whole quarter hours within -12 h .. +14 h.
_QUARTER_HOUR = 900
_MAX_OFFSET = timedelta(hours=14)


@dataclass(frozen=True)
class DbBan:
    """One row of fail2ban's `bips` table: the latest ban of `value` in `jail`, as fail2ban stored it.

    `timeofban` is epoch seconds; `bantime` seconds, -1 permanent (-2: unknown, from an old schema).
    """

    jail: str
    value: str
    timeofban: int
    bantime: int


@dataclass(frozen=True)
class JailTimes:
    """A jail's current ban times, which fail2ban's restore clips stored bans with (jail.py)."""

    bantime: int  # `get JAIL bantime`; -1 permanent
    increment: bool  # `get JAIL bantime.increment`
    maxtime: int | None  # `get JAIL bantime.maxtime`; None when unset


@dataclass(frozen=True)
class ZoneCheck:
    """Ban entries checked against the database's epochs (`check_zone`)."""

    entries: tuple[BanEntry, ...]  # with the database's times where fail2ban's zone was misread
    offsets: tuple[timedelta, ...]  # fail2ban's UTC offsets that the database implies, when misread
    misread: int  # entries whose printed start disagreed with the database by such an offset
    compared: int  # entries that have a database row


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
    """Entries of `fail2ban-client get JAIL banip --with-time`; times are in fail2ban's zone `tz`."""
    text = output.rstrip("\n")
    if not text.strip():
        return []  # fail2ban prints one empty line when the jail holds no bans
    entries = []
    starts: dict[tuple[str, ...], datetime] = {}  # bulk bans share their second: localize each once
    for number, line in enumerate(text.split("\n"), 1):
        m = _BAN_LINE.fullmatch(line)
        if m is None:
            raise ValueError(
                f"jail {jail}: line {number} {_quote(line)} is not 'IP \\tSTART + SECONDS = END'"
            )
        try:
            entries.append(_entry(jail, m, tz, starts))
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


def not_shown(
    stored: Iterable[DbBan], shown: Collection[tuple[str, str]], jails: Collection[str]
) -> list[DbBan]:
    """Stored bans of the server's `jails` that the server does not show: (jail, value) pairs.

    Values that are no address are left out: they never become a rule, so nothing waits for them.
    A jail the server does not have restores nothing.
    """
    return [
        b
        for b in stored
        if b.jail in jails and (b.jail, b.value) not in shown and _address(b.value) is not None
    ]


def will_restore(ban: DbBan, jail: JailTimes, now: float) -> bool:
    """Whether fail2ban, (re)starting at `now`, restores `ban` (database.py getCurrentBans and
    jail.py restoreCurrentBans of fail2ban 1.0, step by step).

    Without bantime.increment only bans younger than the jail's bantime are looked at, and every ban
    (a permanent one too) is clipped to that bantime; with it, to bantime.maxtime when set. A ban whose
    clipped end has passed is not restored.
    """
    if jail.increment:
        forbantime = None
        clip = jail.maxtime if jail.maxtime is not None else -1
    else:
        forbantime = jail.bantime
        clip = jail.bantime
    bantime, timeofban = ban.bantime, ban.timeofban
    # the query: current by the stored time, and (without increment) banned within the jail's bantime
    if not (timeofban + bantime > now or bantime <= -1):
        return False
    if forbantime not in (None, -1) and not timeofban > now - forbantime:
        return False
    if bantime == -2:  # unknown after a schema upgrade: the jail's bantime
        bantime = jail.bantime
    elif clip > 0 and (bantime == -1 or bantime > clip):
        bantime = clip
    return bantime == -1 or timeofban + bantime > now


def check_zone(entries: Iterable[BanEntry], stored: Iterable[DbBan], tz: tzinfo) -> ZoneCheck:
    """Check the zone `entries` were read in against the database's epochs (`bips.timeofban`).

    A printed start that is off its stored epoch by a whole-quarter-hour offset means fail2ban prints
    another zone than `tz`: such an entry is read again with the UTC offset its row implies (its length
    kept), and an entry without a row with the offset found for the nearest stored ban. Other differences
    (a ban newer than its row, say) are left as printed: they are not the zone's doing.
    """
    epochs = {(b.jail, b.value): b.timeofban for b in stored}
    items = list(entries)
    # (stored start, fail2ban's UTC offset then) for every entry with a row
    witnessed: list[tuple[datetime, timedelta]] = []
    fixed: dict[int, datetime] = {}
    offsets: set[timedelta] = set()
    for index, entry in enumerate(items):
        epoch = epochs.get((entry.jail, entry.value))
        if epoch is None:
            continue
        stored_start = datetime.fromtimestamp(epoch, UTC)
        offset = _printed_offset(entry.start, tz, stored_start)
        witnessed.append((stored_start, offset))
        if abs(entry.start - stored_start) <= _SAME_START:
            continue
        assumed = entry.start.astimezone(tz).utcoffset() or timedelta(0)
        if _plausible_offset(offset) and offset != assumed:
            # the printed wall time read with that offset: what a reader in fail2ban's zone gets (the
            # stored epoch itself is rounded where the print is truncated: a rule would flap by 1 s)
            fixed[index] = _at_offset(entry.start, tz, offset)
            offsets.add(offset)
    # one zone has at most two offsets (standard and daylight time); more is not a zone
    if not fixed or len(offsets) > 2:
        return ZoneCheck(tuple(items), (), 0, len(witnessed))
    out = []
    for index, entry in enumerate(items):
        start = fixed.get(index)
        if start is None and (entry.jail, entry.value) not in epochs:
            start = _reread(entry.start, tz, witnessed)
        out.append(entry if start is None else _moved(entry, start))
    return ZoneCheck(tuple(out), tuple(sorted(offsets)), len(fixed), len(witnessed))


def format_offset(offset: timedelta) -> str:
    """`UTC-08:00`, `UTC+05:30`, `UTC`."""
    if not offset:
        return "UTC"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes > 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _printed_offset(start: datetime, tz: tzinfo, stored_start: datetime) -> timedelta:
    """fail2ban's UTC offset at `stored_start`, from the wall time it printed (read back from `tz`)."""
    wall = start.astimezone(tz).replace(tzinfo=None)
    seconds = (wall - stored_start.replace(tzinfo=None)).total_seconds()
    return timedelta(minutes=round(seconds / 60))


def _plausible_offset(offset: timedelta) -> bool:
    return int(offset.total_seconds()) % _QUARTER_HOUR == 0 and abs(offset) <= _MAX_OFFSET


def _reread(start: datetime, tz: tzinfo, witnessed: list[tuple[datetime, timedelta]]) -> datetime | None:
    """An entry with no row: its printed wall time read with the offset of the nearest stored ban."""
    if not witnessed:
        return None
    _, offset = min(witnessed, key=lambda w: abs(w[0] - start))
    moved = _at_offset(start, tz, offset)
    return None if moved == start else moved


def _at_offset(start: datetime, tz: tzinfo, offset: timedelta) -> datetime:
    """The wall time fail2ban printed (`start` read in `tz`), read at UTC `offset` instead."""
    wall = start.astimezone(tz).replace(tzinfo=None)
    return (wall - offset).replace(tzinfo=UTC)


def _moved(entry: BanEntry, start: datetime) -> BanEntry:
    end = None if entry.end is None else _add(start, int((entry.end - entry.start).total_seconds()))
    return BanEntry(entry.jail, entry.value, start, end)


def _quote(text: str, limit: int = 200) -> str:
    """repr() of fail2ban's text for an error message, cut short: a junk answer can be megabytes."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "…"


def _entry(jail: str, m: re.Match[str], tz: tzinfo, starts: dict[tuple[str, ...], datetime]) -> BanEntry:
    seconds = int(m.group("seconds"))
    key = m.group("start", "seconds", "end")
    start = starts.get(key)
    if start is None:
        start_wall = datetime.fromisoformat(m.group("start"))
        if seconds == -1:  # permanent (ticket.py); END is the 9999-12-31 placeholder
            start = _localize(start_wall, tz, None)
        else:
            start = _localize(start_wall, tz, (seconds, datetime.fromisoformat(m.group("end"))))
        starts[key] = start
    end = None if seconds == -1 else _add(start, seconds)
    return BanEntry(jail, m.group("value"), start, end)


def _localize(wall: datetime, tz: tzinfo, check: tuple[int, datetime] | None) -> datetime:
    """A wall-clock time in `tz` as UTC.

    fail2ban drops the DST fold when it formats a time, so an ambiguous START has two readings: take the
    one whose START + SECONDS shows as END, else the later one (the ban then never ends too early).
    A time that does not exist in `tz` (a zone differing from the server's) is moved past the gap.
    """
    aware = wall.replace(tzinfo=tz)
    # both folds, then keep those that show as `wall` again: two if ambiguous, none if in a gap
    readings = sorted({aware.astimezone(UTC), aware.replace(fold=1).astimezone(UTC)})
    readings = [r for r in readings if r.astimezone(tz).replace(tzinfo=None) == wall]
    if not readings:
        return dateutil_tz.resolve_imaginary(aware).astimezone(UTC)
    if len(readings) > 1 and check is not None:
        seconds, end_wall = check
        fitting = [r for r in readings if _shows_as(_add(r, seconds), tz, end_wall)]
        if len(fitting) == 1:
            return fitting[0]
    return readings[-1]


def _shows_as(instant: datetime | None, tz: tzinfo, wall: datetime) -> bool:
    if instant is None:
        return False
    shown = instant.astimezone(tz).replace(tzinfo=None)
    return timedelta(0) <= wall - shown <= _END_SLACK


def _add(start: datetime, seconds: int) -> datetime | None:
    """START + SECONDS in UTC (not wall-clock arithmetic); None if past year 9999, i.e. forever."""
    try:
        return start + timedelta(seconds=seconds)
    except OverflowError:
        return None


def _address(value: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:  # fe80::1%eth0 names an interface, not a host to block
            return None
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
    return ip


def merge(entries: Iterable[BanEntry]) -> tuple[list[Ban], list[BanEntry]]:
    """One Ban per valid address (sorted by version, then address) and the entries that are no address."""
    by_ip: dict[IPAddress, list[BanEntry]] = {}
    invalid: list[BanEntry] = []
    for entry in entries:
        ip = _address(entry.value)
        if ip is None:
            invalid.append(entry)
        else:
            by_ip.setdefault(ip, []).append(entry)
    bans = []
    for ip in sorted(by_ip, key=lambda a: (a.version, int(a))):
        group = by_ip[ip]
        ends = [e.end for e in group]
        until = None if any(end is None for end in ends) else max(end for end in ends if end is not None)
        bans.append(
            Ban(
                ip=ip,
                jails=tuple(sorted({e.jail for e in group})),
                since=min(e.start for e in group),
                until=until,
            )
        )
    return bans, invalid
