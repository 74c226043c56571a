"""The ASN cache file (DESIGN §10): JSON, bounded, written atomically; entries refreshed after the ttl."""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from reconcile.atomic import write_atomically
from reconcile.enrich.cymru import COUNTRY_CODE, AsnInfo, clean_name
from reconcile.enrich.whois import failure_reason

DEFAULT_MAX_ENTRIES = 100_000
# A full cache of DEFAULT_MAX_ENTRIES is about 15 MB; a bigger file is not ours (or not a cache) and is not
# read: a 90 MB file read whole took 550 MB of memory.
MAX_BYTES = 32 * 1024 * 1024


CACHE_VERSION = 1


_CACHED_AS = re.compile(r"^AS[0-9]{1,10}$")


_KEY = re.compile(r"^[0-9a-f.:]{2,39}$")  # an address in compressed form, roughly: cheap at 100,000


_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


@dataclass(frozen=True)
class CacheEntry:
    info: AsnInfo
    looked_up: datetime


def cache_document(entries: Mapping[str, CacheEntry], max_entries: int) -> dict[str, Any]:
    """The JSON cache: the newest `max_entries` entries (oldest out first), oldest first in the file.

    Keys are addresses in compressed form (`ip.compressed`), the form lookups use.
    """
    ordered = sorted(entries.items(), key=lambda item: item[1].looked_up)
    kept = ordered[-max_entries:] if max_entries > 0 else []
    return {
        "version": CACHE_VERSION,
        "entries": {
            key: {
                "asn": e.info.asn,
                "cc": e.info.cc,
                "name": e.info.name,
                "prefix": e.info.prefix,
                "looked_up": e.looked_up.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            for key, e in kept
        },
    }


def _optional_str(value: Any, pattern: re.Pattern[str] | None = None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
        raise ValueError(f"bad value {value!r}")
    return value


def parse_cache(doc: Any) -> tuple[dict[str, CacheEntry], int]:
    """Entries of a cache document and the count of invalid ones; ValueError if it is not a cache at all.

    Keys are not parsed as addresses (100,000 of them would cost seconds): one that is not an address in
    compressed form never matches a lookup, and ages out.
    """
    if not isinstance(doc, dict) or doc.get("version") != CACHE_VERSION:
        raise ValueError("not a version 1 ASN cache")
    raw_entries = doc.get("entries")
    if not isinstance(raw_entries, dict):
        raise ValueError("no entries object")
    entries: dict[str, CacheEntry] = {}
    invalid = 0
    for key, raw in raw_entries.items():
        try:
            if not _KEY.match(key):
                raise ValueError("not an address")
            if not isinstance(raw, dict):
                raise ValueError("entry is not an object")
            info = AsnInfo(
                asn=_optional_str(raw.get("asn"), _CACHED_AS),
                cc=_optional_str(raw.get("cc"), COUNTRY_CODE),
                name=_name(raw.get("name")),
                prefix=_optional_str(raw.get("prefix")),
            )
            stamp = raw.get("looked_up")
            if not isinstance(stamp, str) or not _STAMP.match(stamp):
                raise ValueError("no looked_up time")
            looked_up = datetime.fromisoformat(stamp)  # strptime is 10x slower at 100,000 entries
        except ValueError:
            invalid += 1
            continue
        entries[key] = CacheEntry(info, looked_up)
    return entries, invalid


def is_fresh(entry: CacheEntry, now: datetime, ttl: timedelta) -> bool:
    # an entry from the future (the clock went back) is refreshed rather than trusted for ever
    return timedelta(0) <= now - entry.looked_up < ttl


def _name(value: Any) -> str | None:
    # An AS name read back is cleaned as a fresh one is (cymru.clean_name): the file may have been edited.
    name = _optional_str(value)
    return clean_name(name) if name is not None else None


def location_problem(path: Path) -> str | None:
    """Why the cache at `path` must not be used (read or written), or None.

    Like the lock (DESIGN §12): in a directory that group or others can write, anyone could plant a cache
    whose names reach the operator's terminal and whose AS numbers reach every note, or swap the file for a
    link. A missing directory is no problem: saving creates it (0755).
    """
    directory = path.parent
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"ASN cache {path}: cannot read {directory}: {failure_reason(exc)}"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        return (
            f"ASN cache {path} is in {directory}, which group or others can write (mode {mode:04o}): "
            "refused, not read or written; set [enrich] cache_file in a directory only root can write, "
            "e.g. the default /var/cache/reconcile/asn.json"
        )
    if st.st_uid not in (0, os.geteuid()):
        return f"ASN cache {path} is in {directory}, owned by uid {st.st_uid}: refused, not read or written"
    return None


def load_cache(path: Path) -> tuple[dict[str, CacheEntry], str | None]:
    """The cache's entries, and one warning if it could not be used (a missing file is no warning)."""
    problem = location_problem(path)
    if problem is not None:
        return {}, problem
    try:
        # No link followed, and at most MAX_BYTES read: the file is only ever ours, and bounded.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                return {}, f"ASN cache {path} is not a regular file, ignored"
            data = file.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            return {}, f"ASN cache {path} is over {MAX_BYTES // 2**20} MiB, ignored (it is rewritten)"
        text = data.decode("utf-8")
    except (FileNotFoundError, NotADirectoryError):  # not there (yet): saving says if the path is unusable
        return {}, None
    except (OSError, UnicodeError) as exc:
        return {}, f"ASN cache {path} unreadable, ignored (it is rewritten): {failure_reason(exc)}"
    try:
        entries, invalid = parse_cache(json.loads(text))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError; [[[[... recurses
        return {}, f"ASN cache {path} is corrupt, ignored (it is rewritten): {str(exc)[:200]}"
    if invalid:
        return entries, f"ASN cache {path}: {invalid} invalid entries ignored"
    return entries, None


def save_cache(path: Path, entries: Mapping[str, CacheEntry], max_entries: int) -> None:
    """Write the cache atomically (a reader never sees half a file); OSError on failure."""
    problem = location_problem(path)
    if problem is not None:
        raise PermissionError(problem)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(cache_document(entries, max_entries), separators=(",", ":"), sort_keys=False)
    write_atomically(path, payload + "\n")  # nothing secret in it; readable for --report
