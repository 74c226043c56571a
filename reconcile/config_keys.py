"""Every configuration key, once: one frozen dataclass per TOML section, one field per key.

The field's name is the key, its type the parsed value's, its default the key's default; its metadata
(`key()`) holds the one-line meaning, the upper bound and its unit, and the key's own check. The loader
(config_parse) reads nothing else; README's key table and cron/cloudflare-reconcile.toml.example are tested
against these fields.
"""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

KEY = "reconcile.config_keys.Key"  # the metadata entry that makes a field a key

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Backend = Literal["rules", "list"]  # DESIGN §9
WafRule = Literal["check", "create", "off"]
Mode = Literal["block", "managed_challenge", "challenge", "js_challenge"]


@dataclass(frozen=True)
class Key:
    """What a field says about its key besides name, type and default."""

    doc: str  # the one-line meaning (README's key table starts each row's meaning with it)
    max: int | None = None  # numbers: the upper bound (nan and inf are refused everywhere)
    unit: str = ""  # the bound's unit, as the error message and the README say it
    positive: bool = False  # numbers: zero is refused too ("must be greater than zero")
    check: Callable[[Any], Any] | None = None  # the parsed value -> the value kept; ValueError: the problem


def key(
    default: Any,
    *,
    doc: str,
    max: int | None = None,
    unit: str = "",
    positive: bool = False,
    check: Callable[[Any], Any] | None = None,
) -> Any:
    """A dataclass field that is a configuration key."""
    return field(default=default, metadata={KEY: Key(doc, max, unit, positive, check)})


def key_fields(section: type[Any]) -> tuple[Field[Any], ...]:
    """The fields of a section dataclass that are keys (not the values derived from them)."""
    return tuple(f for f in fields(section) if KEY in f.metadata)


def spec(f: Field[Any]) -> Key:
    found: Key = f.metadata[KEY]
    return found


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int


# A run must end well before the 10 minutes after which its lock counts as stuck (DESIGN §6): hence the
# time limits.
MAX_TIMEOUT = 120

# fullmatch everywhere: "$" would accept a trailing newline (DESIGN §7, issue 7 item 9).
_ID = re.compile(r"[0-9a-f]{32}")
_LIST_NAME = re.compile(r"[a-z0-9_]{1,50}")
_HOST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def _command(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError("must name the fail2ban-client program")
    return value


def _timezone(value: str) -> str:
    try:
        if value:
            zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {value!r} (an IANA name)") from None
    return value


def _api_base_url(value: str) -> str:
    url = value.rstrip("/")
    if not url.startswith(("https://", "http://")):
        raise ValueError("must be an https:// URL")
    return url


def _account_id(value: str) -> str:
    if value and not _ID.fullmatch(value):
        raise ValueError("must be a 32-character hex account id")
    return value


def valid_zone_id(value: str) -> str:
    """A zone id, from zone_ids or read from zone_id_file (config.py checks both)."""
    if not _ID.fullmatch(value):
        raise ValueError(f"{value!r} is not a 32-character hex zone id")
    return value


def _list_name(value: str) -> str:
    if not _LIST_NAME.fullmatch(value):
        raise ValueError(f"{value!r} must be 1-50 of a-z, 0-9 and '_'")
    return value


def _tag(value: str) -> str:
    tag = value.strip()
    if not tag or len(tag) > 100:
        raise ValueError("must be a non-empty string of at most 100 characters")
    return tag


def valid_host_id(value: str) -> str:
    """A host id, set or the hostname (config.py checks the latter)."""
    if not _HOST_ID.fullmatch(value):
        raise ValueError(f"{value!r} must be 1-63 letters, digits, '.', '_' or '-'")
    return value


def _host_id(value: str) -> str:
    return valid_host_id(value) if value else value  # empty: the hostname, filled in by config.py


def _fraction(value: float) -> float:
    if not 0 <= value <= 1:
        raise ValueError("must be between 0 and 1")
    return value


def _reserve(value: float) -> float:
    # 0 lets a run spend the quota to its last request (the next caller, a person too, meets a 429);
    # above a half a run can hardly write.
    if not 0 < value <= 0.5:
        raise ValueError("must be above 0 and at most 0.5")
    return value


@dataclass(frozen=True)
class Fail2banSection:
    command: tuple[str, ...] = key(
        ("fail2ban-client",),
        doc="argv prefix of every fail2ban-client call, "
        'e.g. `["fail2ban-client", "-s", "/run/fail2ban/fail2ban.sock"]`',
        check=_command,
    )
    jails: tuple[str, ...] = key((), doc="jails to sync; empty: every jail")
    timeout: float = key(
        30.0, doc="seconds per fail2ban-client call", positive=True, max=MAX_TIMEOUT, unit="seconds"
    )
    timezone: str = key(
        "", doc="IANA zone of fail2ban's printed times; empty: this machine's", check=_timezone
    )


@dataclass(frozen=True)
class CloudflareSection:
    api_base_url: str = key(
        "https://api.cloudflare.com/client/v4",
        doc="the API's address; `http://` only for loopback (tests)",
        check=_api_base_url,
    )
    api_token_file: Path | None = key(
        Path("/etc/cloudflare/API_TOKEN"),
        doc="file holding the API token, refused when group or others can read it; empty: none",
    )
    api_email: str = key("", doc="legacy auth instead of a token: the account's email, with `api_key_file`")
    api_key_file: Path | None = key(
        None, doc="legacy auth: file holding the global API key, with `api_email`; empty: none"
    )
    zone_ids: tuple[str, ...] = key((), doc="zones whose rules are managed; empty: read from `zone_id_file`")
    zone_id_file: Path | None = key(
        Path("/etc/cloudflare/ZONE_ID"),
        doc="file with the zone ids, read when `zone_ids` and `account_id` are empty",
    )
    account_id: str = key(
        "",
        doc='set: account-level rules (one rule covers every zone); required by `backend = "list"`',
        check=_account_id,
    )
    backend: Backend = key("rules", doc="`rules`: IP Access Rules; `list`: an account IP list")
    list_name: str = key(
        "fail2ban", doc='`backend = "list"`: the list (a-z, 0-9, _), created if missing', check=_list_name
    )
    list_capacity: int = key(
        10000,
        doc='`backend = "list"`: the room the list may fill (foreign items count too)',
        positive=True,
        max=1_000_000,  # Enterprise accounts may have more than 10,000 items; beyond this is a typo
        unit="items",
    )
    waf_rule: WafRule = key(
        "check", doc='`backend = "list"`: `check`, `create` or `off`, the zones\' rule that enforces the list'
    )
    mode: Mode = key("block", doc="`block`, `managed_challenge`, `challenge` or `js_challenge`")
    tag: str = key("Blocked by fail2ban", doc="the notes prefix that marks a rule as managed", check=_tag)
    max_requests_per_run: int = key(
        600, doc="request budget of one run (listing included)", positive=True, max=10_000, unit="requests"
    )
    requests_per_minute: float = key(
        200.0,
        doc="a ceiling on the sustained request rate (short bursts while the account's quota is plentiful)",
        positive=True,
        max=60_000,  # Cloudflare allows 1,200 per 5 minutes; the tests' emulator is paced far faster
        unit="per minute",
    )
    quota_reserve: float = key(
        0.1,
        doc="share of the account's API quota a run never spends (more while others spend), 0 < x <= 0.5",
        check=_reserve,
    )
    timeout: float = key(30.0, doc="seconds per HTTP request", positive=True, max=MAX_TIMEOUT, unit="seconds")
    retries: int = key(3, doc="retries of 5xx, timeouts, resets", max=10, unit="retries")
    # Not a key: whether the file set api_token_file (then the token file must exist).
    api_token_file_explicit: bool = False


@dataclass(frozen=True)
class PolicySection:
    host_id: str = key(
        "",
        doc="this server's name in the notes' host sets, one per server; empty: the hostname",
        check=_host_id,
    )
    allowlist: tuple[Network, ...] = key((), doc="CIDRs never blocked, on top of every non-global range")
    max_rule_age: timedelta | None = key(
        None, doc="cap on every rule's lease, e.g. `\"7d\"` (units s m h d w); empty: fail2ban's ban end"
    )
    max_expire_fraction: float = key(
        0.3,
        doc="the expiry guard: the share of the managed rules a run may expire (from 10 rules up), 0 to 1",
        check=_fraction,
    )
    skip_cloudflare_ranges: bool = key(True, doc="never push a ban of Cloudflare's own addresses")


@dataclass(frozen=True)
class RunSection:
    lock_file: Path = key(Path("/run/reconcile/lock"), doc="one run at a time, in a root-only directory")
    max_seconds: float = key(
        100.0,
        doc="the run's time limit, below the 2-minute timer interval",
        positive=True,
        max=300,
        unit="seconds",
    )


@dataclass(frozen=True)
class MetricsSection:
    textfile: Path | None = key(None, doc="Prometheus textfile to write after each run; empty: none")


@dataclass(frozen=True)
class EnrichSection:
    asn: bool = key(False, doc="note the origin AS of every address written")
    whois_server: HostPort = key(
        HostPort("whois.cymru.com", 43),
        doc="`host:port`, `[IPv6]:port`, or a host (port 43) speaking Team Cymru's bulk protocol",
    )
    timeout: float = key(
        10.0, doc="seconds for the whole lookup of one run", positive=True, max=MAX_TIMEOUT, unit="seconds"
    )
    cache_file: Path = key(
        Path("/var/cache/reconcile/asn.json"),
        doc="the answers kept (JSON), so each address is asked once per `cache_ttl`",
    )
    cache_ttl: timedelta = key(timedelta(days=7), doc="how long a kept answer is used (units s m h d w)")
