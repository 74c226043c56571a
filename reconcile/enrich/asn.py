"""One run's enrichment (DESIGN §10): the origin AS of the addresses about to be written, fresh cache entries
first, the rest in one bulk query (whois.py, the one module that opens the whois socket).

`enrich` is what a run calls: it never raises on a network or cache failure, and the whole lookup is
bounded by its `timeout`. The wire format is cymru.py's, the cache file cache.py's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType

from reconcile.core.model import IPAddress
from reconcile.enrich.cache import (
    DEFAULT_MAX_ENTRIES,
    CacheEntry,
    is_fresh,
    load_cache,
    location_problem,
    save_cache,
)
from reconcile.enrich.cymru import AsnInfo
from reconcile.enrich.whois import AsnLookupError, failure_reason, query_bulk

log = logging.getLogger("reconcile.asn")


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
    # AS number -> AS name, of every entry of the cache and every answer: the report names the networks of
    # rules that are not written this run too (a steady state writes nothing, and asks for nothing).
    names: Mapping[str, str] = field(default_factory=dict)

    @property
    def hit_ratio(self) -> float | None:
        """Cache hits among the addresses asked for; None when there were none."""
        total = self.hits + self.looked_up
        return self.hits / total if total else None


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
    save: bool = True,
) -> Enrichment:
    """Origin AS of each address: fresh cache entries first, the rest asked in one bulk connection.

    Never raises on a network or cache failure. Cache problems are logged here (one warning each: an
    unusable cache file, a failed save); a failed or partial lookup is returned as `warning` for the
    caller to log. The cache is saved when it gained entries (or was unusable), pruned to `max_entries`.
    `now` (timezone-aware) stamps new entries and judges old ones against `ttl`; `timeout` bounds the
    whole lookup, so the caller passes the smaller of `[enrich] timeout` and what is left of the run.
    `save` False (`--report`): the cache file is read, never written.
    """
    wanted = list(dict.fromkeys(addresses))
    cache: dict[str, CacheEntry] = {}
    cache_bad = False
    if cache_file is not None and (refused := location_problem(cache_file)) is not None:
        log.warning("%s", refused)  # a cache others could plant is neither read nor written
        cache_file = None
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
    if save and cache_file is not None and (answered or cache_bad):
        try:
            save_cache(cache_file, cache, max_entries)
        except OSError as exc:
            log.warning("ASN cache %s not saved: %s", cache_file, failure_reason(exc))
    return Enrichment(
        infos=MappingProxyType(infos),
        hits=hits,
        looked_up=len(missing),
        answered=len(answered),
        result=result,
        warning=warning,
        seconds=seconds,
        names=MappingProxyType(
            {e.info.asn: e.info.name for e in cache.values() if e.info.asn and e.info.name}
        ),
    )
