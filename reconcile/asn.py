"""The one place that opens the whois socket: origin AS of banned addresses, in Team Cymru's bulk mode.

Pure parts (the query, the answer parser, the cache document) are apart from the IO (one TCP connection
per run, the JSON cache file). `enrich` is what a run calls: it never raises on a network or cache
failure, and the whole lookup is bounded by its `timeout` (DESIGN §10).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from reconcile.atomic import write_atomically
from reconcile.errors import ReconcileError
from reconcile.model import IPAddress

log = logging.getLogger("reconcile.asn")

DEFAULT_MAX_ENTRIES = 100_000
CACHE_VERSION = 1
# A name longer than this is cut: it is shown in reports, never written to a note.
MAX_NAME = 200
# Cymru answers ~100 bytes per address; a server streaming more than this is not answering us.
_MIN_ANSWER_CAP = 1 << 20
_ANSWER_BYTES_PER_ADDRESS = 1024

_AS_NUMBER = re.compile(r"^[0-9]{1,10}$")
_CC = re.compile(r"^[A-Z]{2}$")
_CACHED_AS = re.compile(r"^AS[0-9]{1,10}$")
_KEY = re.compile(r"^[0-9a-f.:]{2,39}$")  # an address in compressed form, roughly: cheap at 100,000
_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class AsnLookupError(ReconcileError):
    """The bulk lookup gave nothing usable (refused, timed out, closed, garbage); one line says why."""


@dataclass(frozen=True)
class AsnInfo:
    """What the whois server said about one address; None where it said `NA` (unknown)."""

    asn: str | None  # "AS24940"
    cc: str | None  # "DE": the prefix's registry country, not a geolocation
    name: str | None  # "HETZNER-AS, DE"
    prefix: str | None  # "88.198.0.0/16"


@dataclass(frozen=True)
class Enrichment:
    """The outcome of one run's enrichment.

    `infos` holds every asked address that is known from the cache or answered now (an answer of `NA`
    is an AsnInfo with asn None). `hits` addresses came from the cache, `looked_up` were asked over the
    connection and `answered` of those got a line back. `result`: ok (every asked address answered),
    partial (some), failed (none: refused, timed out, garbage), skipped (nothing to ask: no connection).
    `warning` is one line for a failed or partial lookup; the caller logs it once.
    """

    infos: Mapping[IPAddress, AsnInfo]
    hits: int
    looked_up: int
    answered: int
    result: str  # "ok" | "partial" | "failed" | "skipped"
    warning: str | None
    seconds: float  # time spent in the lookup itself (0 when skipped)

    @property
    def hit_ratio(self) -> float | None:
        """Cache hits among the addresses asked for; None when there were none."""
        total = self.hits + self.looked_up
        return self.hits / total if total else None


@dataclass(frozen=True)
class CacheEntry:
    info: AsnInfo
    looked_up: datetime


# ------------------------------------------------------------------------------------------- pure parts


def format_query(addresses: Sequence[IPAddress]) -> bytes:
    """The bulk request: `begin`, `verbose` (adds prefix, registry, date and AS name), one address a line."""
    lines = ["begin", "verbose", *(ip.compressed for ip in addresses), "end"]
    return ("\n".join(lines) + "\n").encode("ascii")


def _is_banner(line: str) -> bool:
    return line.startswith("Bulk mode;")


def _is_header(fields: list[str]) -> bool:
    return len(fields) >= 3 and fields[0] == "AS" and fields[1] == "IP" and fields[2] == "BGP Prefix"


def _unknown(value: str) -> bool:
    return value in ("", "NA")


def parse_line(line: str) -> tuple[IPAddress, AsnInfo] | None:
    """One data line `AS | IP | BGP Prefix | CC | Registry | Allocated | AS Name`; None if it is not one."""
    fields = [f.strip() for f in line.split("|", 6)]
    if len(fields) != 7:
        return None
    as_field, ip_field, prefix_field, cc_field, _registry, _allocated, name_field = fields
    try:
        ip = ipaddress.ip_address(ip_field)
    except ValueError:
        return None
    if as_field == "NA":
        asn = None
    elif _AS_NUMBER.match(as_field) and 0 < int(as_field) < 2**32:
        asn = f"AS{int(as_field)}"
    else:
        return None
    if _unknown(prefix_field):
        prefix = None
    else:
        try:
            prefix = ipaddress.ip_network(prefix_field, strict=False).compressed
        except ValueError:
            return None
    if _unknown(cc_field):
        cc = None
    elif _CC.match(cc_field):
        cc = cc_field
    else:
        return None
    name = None if _unknown(name_field) else _CONTROL.sub(" ", name_field)[:MAX_NAME].strip() or None
    return ip, AsnInfo(asn=asn, cc=cc, name=name, prefix=prefix)


def parse_bulk(text: str) -> tuple[dict[IPAddress, AsnInfo], int]:
    """Every data line of a bulk answer, by content: the banner, a header and blank lines are skipped.

    Returns the infos and the count of malformed lines (each logged at debug). When the server gives
    several lines for one address (a prefix with several origins), the first one counts.
    """
    infos: dict[IPAddress, AsnInfo] = {}
    skipped = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or _is_banner(line) or _is_header([f.strip() for f in line.split("|")]):
            continue
        parsed = parse_line(line)
        if parsed is None:
            skipped += 1
            log.debug("whois answer line %d skipped, not a data line: %r", number, line[:200])
            continue
        infos.setdefault(parsed[0], parsed[1])
    return infos, skipped


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
                cc=_optional_str(raw.get("cc"), _CC),
                name=_optional_str(raw.get("name")),
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


# ---------------------------------------------------------------------------------------------- network


def _resolve(host: str, port: int, deadline: float) -> list[tuple[Any, ...]]:
    """getaddrinfo bounded by the deadline: it has no timeout of its own and DNS can hang for long."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:  # a literal address: no DNS involved
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    box: list[Any] = []

    def work() -> None:
        try:
            box.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            box.append(exc)

    # a daemon thread: if DNS outlives the deadline, the run goes on and the thread dies with the process
    thread = threading.Thread(target=work, name="asn-resolve", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if not box:
        raise TimeoutError("name resolution timed out")
    if isinstance(box[0], OSError):
        raise box[0]
    result: list[tuple[Any, ...]] = box[0]
    return result


def _connect(host: str, port: int, deadline: float) -> socket.socket:
    errors: list[str] = []
    for family, kind, proto, _name, address in _resolve(host, port, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out")
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(remaining)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            errors.append(_reason(exc))
            continue
        return sock
    raise ConnectionError("; ".join(errors) or "no address")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError; ours say what timed out
        return exc.strerror or str(exc) or "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve: {exc.strerror or exc}"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    filename = getattr(exc, "filename", None)
    return f"{text}: {filename}" if filename else str(text)


def query_bulk(
    host: str, port: int, addresses: Sequence[IPAddress], timeout: float
) -> dict[IPAddress, AsnInfo]:
    """Ask for `addresses` over ONE connection in bulk mode and read until the server closes.

    The whole of it (resolve, connect, send, read) ends by `timeout` seconds from now. A partial answer
    (the server closed or the time ran out after some lines) gives what it holds; an answer with no usable
    line for an asked address raises AsnLookupError, as do refusal and timeout. Lines for addresses not
    asked are ignored. Addresses are asked once each, in the order given.
    """
    asked = list(dict.fromkeys(addresses))
    where = f"whois {host}:{port}"
    if not asked:
        return {}
    if timeout <= 0:  # the run's time is up: not even a DNS query
        raise AsnLookupError(f"{where}: no time left for the lookup")
    started = time.monotonic()
    deadline = started + timeout
    cap = max(_MIN_ANSWER_CAP, _ANSWER_BYTES_PER_ADDRESS * len(asked))
    chunks: list[bytes] = []
    size = 0
    ended = "closed"
    try:
        sock = _connect(host, port, deadline)
    except OSError as exc:
        raise AsnLookupError(f"{where}: {_reason(exc)}") from None
    with sock:
        try:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                sock.sendall(format_query(asked))
            except TimeoutError:
                raise
            except OSError as exc:  # closed on us: what it answered before that is still to be read
                log.debug("%s: sending the query failed: %s", where, _reason(exc))
            # half-close: "end" already says so, this also tells servers that wait for EOF
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > cap:
                    ended = f"answer beyond {cap} bytes"
                    break
        except OSError as exc:
            ended = _reason(exc)
    data = b"".join(chunks)
    if ended != "closed" and b"\n" in data:
        # stopped mid-stream: the last line may be cut short, so it is not trusted
        data = data[: data.rindex(b"\n") + 1]
    elif ended != "closed":
        data = b""
    infos, skipped = parse_bulk(data.decode("utf-8", errors="replace"))
    wanted = set(asked)
    stray = [ip for ip in infos if ip not in wanted]
    for ip in stray:
        del infos[ip]
    log.debug(
        "%s: asked %d, answered %d, %d malformed and %d stray lines, %d bytes in %.3f s (%s)",
        where,
        len(asked),
        len(infos),
        skipped,
        len(stray),
        len(data),
        time.monotonic() - started,
        ended,
    )
    if not infos:
        if ended == "timed out":
            raise AsnLookupError(f"{where}: timed out after {timeout:g} s with no usable answer line")
        if ended != "closed":
            raise AsnLookupError(f"{where}: {ended}, with no usable answer line")
        if not data.strip():
            raise AsnLookupError(f"{where}: the server closed the connection without an answer")
        raise AsnLookupError(f"{where}: no usable line in the answer ({skipped} malformed)")
    return infos


# ------------------------------------------------------------------------------------------------ cache


def load_cache(path: Path) -> tuple[dict[str, CacheEntry], str | None]:
    """The cache's entries, and one warning if it could not be used (a missing file is no warning)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):  # not there (yet): saving says if the path is unusable
        return {}, None
    except (OSError, UnicodeError) as exc:
        return {}, f"ASN cache {path} unreadable, ignored (it is rewritten): {_reason(exc)}"
    try:
        entries, invalid = parse_cache(json.loads(text))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError; [[[[... recurses
        return {}, f"ASN cache {path} is corrupt, ignored (it is rewritten): {str(exc)[:200]}"
    if invalid:
        return entries, f"ASN cache {path}: {invalid} invalid entries ignored"
    return entries, None


def save_cache(path: Path, entries: Mapping[str, CacheEntry], max_entries: int) -> None:
    """Write the cache atomically (a reader never sees half a file); OSError on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(cache_document(entries, max_entries), separators=(",", ":"), sort_keys=False)
    write_atomically(path, payload + "\n")  # nothing secret in it; readable for --report


# ----------------------------------------------------------------------------------------------- enrich


def enrich(
    addresses: Iterable[IPAddress],
    *,
    host: str,
    port: int,
    timeout: float,
    cache_file: Path | None,
    ttl: timedelta,
    now: datetime,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> Enrichment:
    """Origin AS of each address: fresh cache entries first, the rest asked in one bulk connection.

    Never raises on a network or cache failure. Cache problems are logged here (one warning each: an
    unusable cache file, a failed save); a failed or partial lookup is returned as `warning` for the
    caller to log. The cache is saved when it gained entries (or was unusable), pruned to `max_entries`.
    `now` (timezone-aware) stamps new entries and judges old ones against `ttl`; `timeout` bounds the
    whole lookup, so the caller passes the smaller of `[enrich] timeout` and what is left of the run.
    """
    wanted = list(dict.fromkeys(addresses))
    cache: dict[str, CacheEntry] = {}
    cache_bad = False
    if cache_file is not None:
        cache, problem = load_cache(cache_file)
        if problem:
            log.warning("%s", problem)
            cache_bad = True
    infos: dict[IPAddress, AsnInfo] = {}
    missing: list[IPAddress] = []
    for ip in wanted:
        entry = cache.get(ip.compressed)
        if entry is not None and is_fresh(entry, now, ttl):
            infos[ip] = entry.info
        else:
            missing.append(ip)
    hits = len(infos)
    answered: dict[IPAddress, AsnInfo] = {}
    warning: str | None = None
    seconds = 0.0
    if not missing:
        result = "skipped"
    else:
        started = time.monotonic()
        try:
            answered = query_bulk(host, port, missing, timeout)
        except (AsnLookupError, OSError) as exc:
            warning = f"ASN lookup failed, rules are written without asn: {exc}"
        seconds = time.monotonic() - started
        if len(answered) == len(missing):
            result = "ok"
        elif answered:
            result = "partial"
            warning = (
                f"ASN lookup partial: whois {host}:{port} answered {len(answered)} of {len(missing)}"
                " addresses; the others are written without asn and asked again next run"
            )
        else:
            result = "failed"
    for ip, info in answered.items():
        infos[ip] = info
        cache[ip.compressed] = CacheEntry(info, now)
    if cache_file is not None and (answered or cache_bad):
        try:
            save_cache(cache_file, cache, max_entries)
        except OSError as exc:
            log.warning("ASN cache %s not saved: %s", cache_file, _reason(exc))
    return Enrichment(
        infos=MappingProxyType(infos),
        hits=hits,
        looked_up=len(missing),
        answered=len(answered),
        result=result,
        warning=warning,
        seconds=seconds,
    )
