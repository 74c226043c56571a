"""Rule notes: the lease a rule carries (DESIGN §4). Pure: no IO, no clock.

Written (one line; optional `asn=AS24940 cc=DE` at the end):
  `Blocked by fail2ban jail=sshd,recidive host=web1,web2 since=2026-11-21T10:00:00Z
  until=2026-11-22T10:00:00Z`. Several hosts and versions read this format back.
Adopted from the older per-ban scripts: `Blocked by fail2ban on 11/21/26 14:03:07 (ASN: AS13335)`,
`Fail2Ban sshd`, `Fail2ban`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from enum import StrEnum

from dateutil import tz

MAX_NOTES = 500
PERMANENT = "permanent"
# The older curl scripts wrote their timestamps in this time zone (DESIGN §4).
LEGACY_TZ: tzinfo = tz.gettz("America/New_York") or UTC

_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)Z")
_LEGACY_DATED = re.compile(
    r"^blocked by fail2ban on (\d\d/\d\d/\d\d \d\d:\d\d:\d\d)(?: \(ASN: ?([^)]*)\))?\s*$", re.IGNORECASE
)
_LEGACY_JAIL = re.compile(r"^fail2ban(?: (\S+))?\s*$", re.IGNORECASE)

_ASN = re.compile(r"(?i)(?:AS)?(\d{1,10})")
_CC = re.compile(r"[A-Za-z]{2}")
# Characters that would break the space/comma/equals structure of a note are replaced in written values.
_UNSAFE = re.compile(r"[\s,=]")


def _maybe_legacy(text: str) -> bool:
    """What either legacy pattern needs: `f…`, or `b…` with `on` after `blocked by fail2ban `. Our own
    notes skip both regexes. Letters only: under IGNORECASE `i` also matches U+0130 and U+0131, which
    str.lower() does not map to `i`, but b, f, o and n match only themselves in either case."""
    first = text[:1]
    return first in ("f", "F") or (first in ("b", "B") and text[20:22].lower() == "on")


class NoteKind(StrEnum):
    LEASE = "lease"  # our format, parsed completely
    LEGACY = "legacy"  # an older script's note: adopted, rewritten on the next renewal
    UNKNOWN = "unknown"  # carries the tag but not a shape we know: kept and reported, never guessed at


@dataclass(frozen=True)
class Note:
    """What a rule's notes say. `hosts` is the sorted host set; `until` None with kind LEASE: permanent."""

    kind: NoteKind
    jails: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    asn: str | None = None
    cc: str | None = None


@dataclass(frozen=True)
class Lease:
    """What a write puts into a rule's notes (the planner's decision, before formatting)."""

    jails: tuple[str, ...]
    hosts: tuple[str, ...]
    since: datetime
    until: datetime | None
    asn: str | None = None
    cc: str | None = None


_new = object.__new__
_set = object.__setattr__
_LEASE = NoteKind.LEASE


def make_lease(
    jails: tuple[str, ...],
    hosts: tuple[str, ...],
    since: datetime,
    until: datetime | None,
    asn: str | None = None,
    cc: str | None = None,
) -> Lease:
    """`Lease(...)` in half the time: the planner makes one per write (75,000 planning 100,000 bans), and a
    frozen dataclass's __init__ sets each field with object.__setattr__. Equal to Lease(...): the unit
    tests compare."""
    made = _new(Lease)
    fields = {"jails": jails, "hosts": hosts, "since": since, "until": until, "asn": asn, "cc": cc}
    _set(made, "__dict__", fields)
    return made


def _lease_note(
    jails: tuple[str, ...],
    hosts: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    asn: str | None,
    cc: str | None,
) -> Note:
    """`Note(NoteKind.LEASE, ...)` the same way (one per listed rule); equal to it, the unit tests compare."""
    made = _new(Note)
    # One dict display: merging two dicts (as this did) cost as much as the rest of the function.
    fields = {
        "kind": _LEASE, "jails": jails, "hosts": hosts, "since": since, "until": until, "asn": asn, "cc": cc,
    }  # fmt: skip
    _set(made, "__dict__", fields)
    return made


def format_time(moment: datetime) -> str:
    # %-formatting of the fields: half the cost of replace() + isoformat(), and of an f-string with format
    # specs; it runs twice per write.
    utc = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    fields = (utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % fields  # noqa: UP031


def parse_time(text: str) -> datetime:
    """Parse `2026-11-21T10:00:00Z` (second precision, UTC); ValueError otherwise."""
    # The regex decides what is accepted; fromisoformat (C, and it reads `Z` as UTC since 3.11) only
    # converts: a fifth of the cost of int() per field, and this runs twice for every listed rule.
    if _TIME.fullmatch(text) is None:
        raise ValueError(f"not a UTC time of the form 2026-11-21T10:00:00Z: {text!r}")
    return datetime.fromisoformat(text)


@functools.lru_cache(maxsize=1024)
def _clean(value: str) -> str:
    # Cached: a few jail and host names, written into every note.
    return _UNSAFE.sub("_", value) or "_"


def normal_asn(text: str | None) -> str | None:
    """`AS13335` for `13335`, `as13335` or `AS13335`; None for anything else (`NA`, empty)."""
    match = _ASN.fullmatch(text.strip()) if text else None
    return f"AS{match.group(1)}" if match else None


def normal_cc(text: str | None) -> str | None:
    return text.upper() if text and _CC.fullmatch(text) else None


def host_set(hosts: Iterable[str]) -> tuple[str, ...]:
    """The canonical host set: cleaned, lower case, unique, sorted.

    Host ids are compared in lower case: they are host names, and DNS does not tell `WEB1` from `web1`, so
    a note another version or a person wrote with `host=WEB1` names the same host as `web1`.
    """
    if isinstance(hosts, tuple):
        return _host_set(hosts)
    return tuple(sorted({_clean(h).lower() for h in hosts}))


@functools.lru_cache(maxsize=256)
def _host_set(hosts: tuple[str, ...]) -> tuple[str, ...]:
    # Cached: a fleet has a handful of host sets, and every write formats one.
    return tuple(sorted({_clean(h).lower() for h in hosts}))


def format_note(tag: str, lease: Lease) -> str | None:
    """The note for `lease`, within MAX_NOTES characters; None when even its host set does not fit.

    The optional fields go first, then jails are cut (with a `+N` count of those left out); the host set is
    never cut, since a host missing from it would let another host delete a block it still needs. None
    means the write must not be sent: a note without the tag would make the rule nobody's (DESIGN §4).
    """
    if not lease.asn:  # nearly every write: no optional field, plain_note's one format
        return plain_note(tag, lease.jails, lease.hosts, lease.since, lease.until)
    return _format_note(tag, lease)


def _format_note(tag: str, lease: Lease) -> str | None:
    since = format_time(lease.since)
    until = format_time(lease.until) if lease.until else PERMANENT
    asn = normal_asn(lease.asn) if lease.asn else None
    optional = (f" asn={asn}" + (f" cc={cc}" if (cc := normal_cc(lease.cc)) else "")) if asn else ""
    if type(lease.jails) is tuple and type(lease.hosts) is tuple:
        # Nearly always: nothing to cut, and the jail and host part is one of a handful (cached).
        head = _head(tag, lease.jails, lease.hosts)
        if len(head) + len(since) + len(until) + len(optional) + _TIMES <= MAX_NOTES:
            return f"{head} since={since} until={until}{optional}"
    fixed = f" host={','.join(host_set(lease.hosts))} since={since} until={until}"
    names = [_clean(j) for j in lease.jails]
    shown = ",".join(names)
    # The optional fields go first (DESIGN §4): they only inform, while the jails say why it is blocked.
    if len(tag) + len(" jail=") + len(shown) + len(fixed) + len(optional) <= MAX_NOTES:
        return f"{tag} jail={shown}{fixed}{optional}"
    room = MAX_NOTES - len(tag) - len(" jail=") - len(fixed)
    kept = list(names)
    # Then a pathological jail list is cut, with a count of what was left out, so the note stays valid.
    while len(shown) > room and kept:
        kept.pop()
        shown = ",".join([*kept, f"+{len(names) - len(kept)}"])
    if len(shown) <= room:
        return f"{tag} jail={shown}{fixed}"
    return None


_TIMES = len(" since=") + len(" until=")


# format_time's text is always 20 characters (a four-digit year): the times part has one length or two.
_STAMP_TEXT = "%04d-%02d-%02dT%02d:%02d:%02dZ"
_TIMES_TEXT = f" since={_STAMP_TEXT} until={_STAMP_TEXT}"
_TIMES_PERMANENT = f" since={_STAMP_TEXT} until={PERMANENT}"
_NOTHING = object()
# The last times formatted, by identity: fail2ban's bulk bans and restores share their time objects (its
# reader makes one per distinct time), so a run of adds reuses one text. An object held here cannot be freed
# and its id reused; the tuple is read and replaced whole.
_last_times: list[tuple[object, object, str]] = [(_NOTHING, _NOTHING, "")]


def plain_note(
    tag: str, jails: tuple[str, ...], hosts: tuple[str, ...], since: datetime, until: datetime | None
) -> str | None:
    """`format_note(tag, Lease(jails, hosts, since, until))`, for a lease without AS or country: the cached
    head and one %-format of the times (once per run of bans with the same time objects) instead of
    format_note's steps (one per write: 75,000 planning 100,000 bans). The same text:
    tests/unit/test_plan_speed.py compares."""
    if type(jails) is tuple and type(hosts) is tuple:
        head = _head(tag, jails, hosts)
        last = _last_times[0]
        if last[0] is since and last[1] is until:
            times = last[2]
        else:
            times = _times_text(since, until)
            _last_times[0] = (since, until, times)
        if len(head) + len(times) <= MAX_NOTES:
            return head + times
    return _format_note(tag, make_lease(jails, hosts, since, until))


def _times_text(since: datetime, until: datetime | None) -> str:
    s = since if since.tzinfo is UTC else since.astimezone(UTC)
    if until is None:
        return _TIMES_PERMANENT % (s.year, s.month, s.day, s.hour, s.minute, s.second)
    u = until if until.tzinfo is UTC else until.astimezone(UTC)
    return _TIMES_TEXT % (
        s.year, s.month, s.day, s.hour, s.minute, s.second, u.year, u.month, u.day, u.hour, u.minute, u.second
    )  # fmt: skip


@functools.lru_cache(maxsize=1024)
def _head(tag: str, jails: tuple[str, ...], hosts: tuple[str, ...]) -> str:
    """`TAG jail=… host=…` of a note whose jails need no cutting."""
    return f"{tag} jail={','.join(_clean(j) for j in jails)} host={','.join(host_set(hosts))}"


def parse_note(
    notes: str, tag: str, *, jails: Collection[str] | None = None, tagged_only: bool = False
) -> Note | None:
    """The lease in a rule's notes; None when the rule is not ours to manage (no tag, no legacy shape).

    `Fail2Ban <word>` is the stock action's note for jail <word>: with `jails` (this fail2ban's) given, it
    is adopted only for one of them (`fail2ban office` is an operator's). `tagged_only` (list items, which
    the older scripts never wrote): only notes that start with the tag are ours (DESIGN §4).
    """
    text = notes.strip()
    # An ASCII tag the text starts with exactly is also its lower-case prefix (every listed note of ours):
    # lower-casing the whole note, once per listed rule, only for the other ones.
    tagged = (tag.isascii() and text.startswith(tag)) or text.lower().startswith(tag.lower())
    if tagged_only and not tagged:
        return None
    legacy = _parse_legacy(text) if _maybe_legacy(text) else None
    if legacy is not None:
        if jails is not None and legacy.jails and legacy.jails[0] not in jails:
            return None
        return legacy
    if not tagged:
        return None
    # Matched from the tag's end, not on a copy of the rest: the pattern has no anchor, so the same match.
    written = _WRITTEN.fullmatch(text, len(tag))
    if written is not None:
        fast = _parse_written(written)
        if fast is not None:
            return fast
    return _parse_fields(text[len(tag) :])


# What format_note writes, field for field: parsed by one regex match, as it is for nearly every listed rule.
# Anything else (other order, extra fields, other spacing) goes through the general parser, which gives the
# same Note for these too.
_STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
_WRITTEN = re.compile(
    rf" jail=(\S*) host=(\S+) since=({_STAMP}) until=({PERMANENT}|{_STAMP})(?: asn=(\S*)(?: cc=(\S*))?)?"
)


def _parse_written(m: re.Match[str]) -> Note | None:
    """The Note of a note in format_note's exact shape; None to leave a doubtful one to _parse_fields."""
    jail, host, since_text, until_text, asn_text, cc_text = m.groups()
    hosts = _sorted_lower_names(host)
    if not hosts or "=" in jail or "=" in host:
        return None
    try:
        until = None if until_text == PERMANENT else datetime.fromisoformat(until_text)
        since = datetime.fromisoformat(since_text)
    except ValueError:
        return None
    asn = normal_asn(asn_text) if asn_text else None
    cc = normal_cc(cc_text) if asn else None
    return _lease_note(_names(jail), hosts, since, until, asn, cc)


# A fleet writes a handful of distinct jail lists and host sets: split each once, not once per rule.
@functools.lru_cache(maxsize=4096)
def _names(text: str) -> tuple[str, ...]:
    return tuple(name for name in text.split(",") if name)


@functools.lru_cache(maxsize=4096)
def _sorted_lower_names(text: str) -> tuple[str, ...]:
    # Lower-cased inside the cache: the host part is one of a handful, lower() per rule made a copy each.
    return tuple(sorted(set(_names(text.lower()))))


def _parse_fields(rest: str) -> Note:
    """The general parser: `key=value` fields after the tag, in any order, unknown ones ignored."""
    if rest and not rest[0].isspace():
        return Note(NoteKind.UNKNOWN)  # e.g. "Blocked by fail2banXYZ": tagged, but not our grammar
    fields: dict[str, str] = {}
    for token in rest.split():
        key, sep, value = token.partition("=")
        if not sep or not key:
            return Note(NoteKind.UNKNOWN)
        fields.setdefault(key, value)
    hosts = tuple(h for h in fields.get("host", "").lower().split(",") if h)
    if not hosts or "until" not in fields:
        return Note(NoteKind.UNKNOWN)
    try:
        until = None if fields["until"] == PERMANENT else parse_time(fields["until"])
        since = parse_time(fields["since"]) if "since" in fields else None
    except ValueError:
        return Note(NoteKind.UNKNOWN)
    jails = tuple(j for j in fields.get("jail", "").split(",") if j)
    asn = normal_asn(fields.get("asn"))
    return Note(
        NoteKind.LEASE,
        jails=jails,
        hosts=tuple(sorted(set(hosts))),
        since=since,
        until=until,
        asn=asn,
        cc=normal_cc(fields.get("cc")) if asn else None,
    )


def _parse_legacy(text: str) -> Note | None:
    dated = _LEGACY_DATED.match(text)
    if dated:
        try:
            local = datetime.strptime(dated.group(1), "%m/%d/%y %H:%M:%S")
        except ValueError:
            return Note(NoteKind.UNKNOWN)
        since = local.replace(tzinfo=LEGACY_TZ).astimezone(UTC)
        return Note(NoteKind.LEGACY, since=since, asn=normal_asn(dated.group(2)))
    named = _LEGACY_JAIL.match(text)
    if named:
        jail = named.group(1)
        return Note(NoteKind.LEGACY, jails=(jail,) if jail else ())
    return None
