"""Rule notes: the lease a rule carries (DESIGN §4). Pure: no IO, no clock.

Written:
  `Blocked by fail2ban jail=sshd,recidive host=web1 since=2026-11-21T10:00:00Z until=2026-11-22T10:00:00Z`
Adopted from the older per-ban scripts: `Blocked by fail2ban on 11/21/26 14:03:07 (ASN: AS13335)`,
`Fail2Ban sshd`, `Fail2ban`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from enum import StrEnum

from dateutil import tz

MAX_NOTES = 500
PERMANENT = "permanent"
# The older curl scripts wrote their timestamps in this zone (DESIGN §4).
LEGACY_TZ: tzinfo = tz.gettz("America/New_York") or UTC

_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)Z")
_LEGACY_DATED = re.compile(
    r"^blocked by fail2ban on (\d\d/\d\d/\d\d \d\d:\d\d:\d\d)(?: \(ASN: ?([^)]*)\))?\s*$", re.IGNORECASE
)
_LEGACY_JAIL = re.compile(r"^fail2ban(?: (\S+))?\s*$", re.IGNORECASE)
# Characters that would break the space/comma/equals structure of a note are replaced in written values.
_UNSAFE = re.compile(r"[\s,=]")


class NoteKind(StrEnum):
    LEASE = "lease"  # our format, parsed completely
    LEGACY = "legacy"  # an older script's note: adopted, rewritten on the next renewal
    UNKNOWN = "unknown"  # carries the tag but not a shape we know: kept and reported, never guessed at


@dataclass(frozen=True)
class Note:
    kind: NoteKind
    jails: tuple[str, ...] = ()
    host: str | None = None
    since: datetime | None = None
    until: datetime | None = None  # None with kind LEASE means permanent
    asn: str | None = None


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def parse_time(text: str) -> datetime:
    """Parse `2026-11-21T10:00:00Z` (second precision, UTC); ValueError otherwise."""
    # A regex and int() instead of strptime: this runs for every listed rule, and strptime is slow.
    match = _TIME.fullmatch(text)
    if not match:
        raise ValueError(f"not a UTC time of the form 2026-11-21T10:00:00Z: {text!r}")
    year, month, day, hour, minute, second = (int(part) for part in match.groups())
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def _clean(value: str) -> str:
    return _UNSAFE.sub("_", value) or "_"


def format_note(tag: str, jails: Sequence[str], host: str, since: datetime, until: datetime | None) -> str:
    """The note for a rule we own; within MAX_NOTES characters whatever the jail list."""
    fields = (
        f" host={_clean(host)} since={format_time(since)} until={format_time(until) if until else PERMANENT}"
    )
    names = [_clean(j) for j in jails]
    room = MAX_NOTES - len(tag) - len(" jail=") - len(fields)
    shown = ",".join(names)
    # A pathological jail list is cut, with a count of what was left out, so the note stays valid.
    while len(shown) > room and names:
        names.pop()
        shown = ",".join([*names, f"+{len(jails) - len(names)}"])
    return f"{tag} jail={shown}{fields}"[:MAX_NOTES]


def parse_note(notes: str, tag: str) -> Note | None:
    """The lease in a rule's notes; None when the rule is not ours to manage (no tag, no legacy shape)."""
    text = notes.strip()
    legacy = _parse_legacy(text)
    if legacy is not None:
        return legacy
    if not text.lower().startswith(tag.lower()):
        return None
    rest = text[len(tag) :]
    if rest and not rest[0].isspace():
        return Note(NoteKind.UNKNOWN)  # e.g. "Blocked by fail2banXYZ": tagged, but not our grammar
    fields: dict[str, str] = {}
    for token in rest.split():
        key, sep, value = token.partition("=")
        if not sep or not key:
            return Note(NoteKind.UNKNOWN)
        fields.setdefault(key, value)
    if "host" not in fields or "until" not in fields:
        return Note(NoteKind.UNKNOWN)
    try:
        until = None if fields["until"] == PERMANENT else parse_time(fields["until"])
        since = parse_time(fields["since"]) if "since" in fields else None
    except ValueError:
        return Note(NoteKind.UNKNOWN)
    jails = tuple(j for j in fields.get("jail", "").split(",") if j)
    return Note(
        NoteKind.LEASE, jails=jails, host=fields["host"], since=since, until=until, asn=fields.get("asn")
    )


def _parse_legacy(text: str) -> Note | None:
    dated = _LEGACY_DATED.match(text)
    if dated:
        try:
            local = datetime.strptime(dated.group(1), "%m/%d/%y %H:%M:%S")
        except ValueError:
            return Note(NoteKind.UNKNOWN)
        since = local.replace(tzinfo=LEGACY_TZ).astimezone(UTC)
        return Note(NoteKind.LEGACY, since=since, asn=(dated.group(2) or None))
    named = _LEGACY_JAIL.match(text)
    if named:
        jail = named.group(1)
        return Note(NoteKind.LEGACY, jails=(jail,) if jail else ())
    return None
