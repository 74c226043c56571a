"""fail2ban's answers turned into values: jail lists, ban lines, and bans merged per address. No IO."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
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
