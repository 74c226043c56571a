"""Which time zone fail2ban prints its times in (DESIGN §2): checked against the database's epochs, and
entries read again at the offset it implies.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from reconcile.core.model import BanEntry
from reconcile.fail2ban.parse import plus_seconds
from reconcile.fail2ban.restore import DbBan

# A live ban's printed START is truncated to the second, its stored timeofban rounded: they differ by <= 1 s.
_SAME_START = timedelta(seconds=2)


# UTC offsets in use are whole quarter hours within -12 h .. +14 h.
_QUARTER_HOUR = 900


_MAX_OFFSET = timedelta(hours=14)


@dataclass(frozen=True)
class TimezoneCheck:
    """Ban entries checked against the database's epochs (`check_timezone`)."""

    entries: tuple[BanEntry, ...]  # with the database's times where fail2ban's time zone was misread
    offsets: tuple[timedelta, ...]  # fail2ban's UTC offsets that the database implies, when misread
    misread: int  # entries whose printed start disagreed with the database by such an offset
    compared: int  # entries that have a database row


def check_timezone(entries: Iterable[BanEntry], stored: Iterable[DbBan], tz: tzinfo) -> TimezoneCheck:
    """Check the time zone `entries` were read in against the database's epochs (`bips.timeofban`).

    A printed start that is off its stored epoch by a whole-quarter-hour offset means fail2ban prints
    another time zone than `tz`: such an entry is read again with the UTC offset its row implies (its length
    kept), and an entry without a row with the offset found for the nearest stored ban. Other differences
    (a ban newer than its row, say) are left as printed: they are not the time zone's doing.
    """
    epochs = {(b.jail, b.value): b.timeofban for b in stored}
    items = list(entries)
    # (stored start, printed start) for every entry with a row; fail2ban's offsets are worked out from
    # them only when some start disagrees: reading 100,000 starts back in `tz` was most of this check
    rows: list[tuple[datetime, datetime]] = []
    stamps: dict[int, datetime] = {}  # bulk bans share their second
    fixed: dict[int, datetime] = {}
    offsets: set[timedelta] = set()
    for index, entry in enumerate(items):
        epoch = epochs.get((entry.jail, entry.value))
        if epoch is None:
            continue
        stored_start = stamps.get(epoch)
        if stored_start is None:
            stored_start = stamps[epoch] = datetime.fromtimestamp(epoch, UTC)
        rows.append((stored_start, entry.start))
        if abs(entry.start - stored_start) <= _SAME_START:
            continue
        offset = _printed_offset(entry.start, tz, stored_start)
        assumed = entry.start.astimezone(tz).utcoffset() or timedelta(0)
        if _plausible_offset(offset) and offset != assumed:
            # the printed wall time read with that offset: what a reader in fail2ban's time zone gets (the
            # stored epoch itself is rounded where the print is truncated: a rule would flap by 1 s)
            fixed[index] = _at_offset(entry.start, tz, offset)
            offsets.add(offset)
    # one time zone has at most two offsets (standard and daylight time); more is not one
    if not fixed or len(offsets) > 2:
        return TimezoneCheck(tuple(items), (), 0, len(rows))
    # (stored start, fail2ban's UTC offset then) for every entry with a row
    witnessed = [(stored, _printed_offset(start, tz, stored)) for stored, start in rows]
    out = []
    for index, entry in enumerate(items):
        start = fixed.get(index)
        if start is None and (entry.jail, entry.value) not in epochs:
            start = _reread(entry.start, tz, witnessed)
        out.append(entry if start is None else _moved(entry, start))
    return TimezoneCheck(tuple(out), tuple(sorted(offsets)), len(fixed), len(rows))


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
    end = None if entry.end is None else plus_seconds(start, int((entry.end - entry.start).total_seconds()))
    return BanEntry(entry.jail, entry.value, start, end)
