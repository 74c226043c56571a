"""Configuration: TOML in, a frozen Config out. Every error names the file and the key."""

from __future__ import annotations

import ipaddress
import math
import re
import socket
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from reconcile.config_file import read_toml
from reconcile.errors import ConfigError

DEFAULT_PATH = Path("/etc/fail2ban/cloudflare-reconcile.toml")
MODES = ("block", "managed_challenge", "challenge", "js_challenge")
BACKENDS = ("rules", "list")
WAF_RULES = ("check", "create", "off")

# section -> key -> default. The loader accepts exactly these keys; cron/cloudflare-reconcile.toml.example
# documents exactly these keys (a test compares the two).
DEFAULTS: dict[str, dict[str, Any]] = {
    "fail2ban": {
        "command": ["fail2ban-client"],
        "jails": [],
        "timeout": 30.0,
        "timezone": "",
    },
    "cloudflare": {
        "api_base_url": "https://api.cloudflare.com/client/v4",
        "api_token_file": "/etc/cloudflare/API_TOKEN",
        "api_email": "",
        "api_key_file": "",
        "zone_ids": [],
        "zone_id_file": "/etc/cloudflare/ZONE_ID",
        "account_id": "",
        "backend": "rules",
        "list_name": "fail2ban",
        "list_capacity": 10000,
        "waf_rule": "check",
        "mode": "block",
        "tag": "Blocked by fail2ban",
        "max_requests_per_run": 600,
        "requests_per_minute": 200.0,
        "timeout": 30.0,
        "retries": 3,
    },
    "policy": {
        "host_id": "",
        "allowlist": [],
        "max_rule_age": "",
        "max_expire_fraction": 0.3,
        "skip_cloudflare_ranges": True,
    },
    "run": {
        "lock_file": "/run/reconcile/lock",
        "max_seconds": 100.0,
    },
    "metrics": {
        "textfile": "",
    },
    "enrich": {
        "asn": False,
        "whois_server": "whois.cymru.com:43",
        "timeout": 10.0,
        "cache_file": "/var/cache/reconcile/asn.json",
        "cache_ttl": "7d",
    },
}

# Upper bounds of the numeric keys (nan and inf are refused everywhere). A run must end well before the
# 10 minutes after which its lock counts as stuck (DESIGN §6): hence the time limits.
MAX_TIMEOUT = (120.0, "seconds")
LIMITS: dict[tuple[str, str], tuple[float, str]] = {
    ("fail2ban", "timeout"): MAX_TIMEOUT,
    ("cloudflare", "timeout"): MAX_TIMEOUT,
    ("enrich", "timeout"): MAX_TIMEOUT,
    ("run", "max_seconds"): (300.0, "seconds"),
    # Cloudflare allows 1,200 per 5 minutes; the tests' emulator is paced far faster than production.
    ("cloudflare", "requests_per_minute"): (60_000.0, "per minute"),
    ("cloudflare", "max_requests_per_run"): (10_000.0, "requests"),
    ("cloudflare", "retries"): (10.0, "retries"),
    # Enterprise accounts may have more than the 10,000 items of the other plans; beyond this is a typo.
    ("cloudflare", "list_capacity"): (1_000_000.0, "items"),
}
MAX_DURATION = timedelta(days=3650)  # max_rule_age, cache_ttl: ten years is already "never"
WHOIS_PORT = 43

# fullmatch everywhere: "$" would accept a trailing newline (DESIGN §7, issue 7 item 9).
_ID = re.compile(r"[0-9a-f]{32}")
_LIST_NAME = re.compile(r"[a-z0-9_]{1,50}")
_HOST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_DURATION = re.compile(r"\s*([0-9]{1,20})\s*([smhdw]?)\s*")  # [0-9], not \d: no other scripts' digits
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_BRACKETED = re.compile(r"\[([^\]]*)\](?::([0-9]{1,5}))?")


@dataclass(frozen=True)
class Config:
    path: Path
    # [fail2ban]
    fail2ban_command: tuple[str, ...]
    jails: tuple[str, ...]
    fail2ban_timeout: float
    fail2ban_timezone: str
    # [cloudflare]
    api_base_url: str
    api_token_file: Path | None
    api_token_file_explicit: bool
    api_email: str
    api_key_file: Path | None
    zone_ids: tuple[str, ...]
    account_id: str
    backend: str  # rules | list (DESIGN §9)
    list_name: str
    list_capacity: int
    waf_rule: str  # check | create | off
    mode: str
    tag: str
    max_requests_per_run: int
    requests_per_minute: float
    http_timeout: float
    retries: int
    # [policy]
    host_id: str
    allowlist: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    max_rule_age: timedelta | None
    max_expire_fraction: float
    skip_cloudflare_ranges: bool
    # [run]
    lock_file: Path
    max_seconds: float
    # [metrics]
    metrics_textfile: Path | None
    # [enrich]
    enrich_asn: bool
    whois_host: str
    whois_port: int
    enrich_timeout: float
    asn_cache_file: Path
    asn_cache_ttl: timedelta


def parse_duration(text: str) -> timedelta:
    """`90`, `90s`, `15m`, `12h`, `7d`, `2w` -> timedelta, at most MAX_DURATION; ValueError otherwise."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 3600, 90m, 12h, 7d, 2w)")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_DURATION.total_seconds():  # before timedelta(), which overflows on absurd values
        raise ValueError(f"{text!r} is too long: at most {MAX_DURATION.days}d (ten years)")
    return timedelta(seconds=seconds)


def parse_host_port(text: str, default_port: int = WHOIS_PORT) -> tuple[str, int]:
    """`host:port`, `[v6]:port`, or a bare host / IP (default port) -> (host, port); ValueError otherwise."""
    bracketed = _BRACKETED.fullmatch(text)
    if bracketed:
        host, port_text = bracketed.group(1), bracketed.group(2)
        if not _is_ip(host, 6):
            raise ValueError(f"{host!r} in brackets is not an IPv6 address")
    elif text.count(":") > 1:  # a bare IPv6 address: no port
        host, port_text = text, None
        if not _is_ip(host, 6):
            raise ValueError(f"{text!r} is not host:port (write an IPv6 address as [addr]:port)")
    else:
        host, colon, after = text.partition(":")
        if colon and not after:
            raise ValueError(f"{text!r} has no port after ':'")
        port_text = after if colon else None
        if not _is_hostname(host):
            raise ValueError(f"{host!r} is not a host name or IPv4 address")
    if port_text is None:
        return host, default_port
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} is not a number from 1 to 65535")
    return host, int(port_text)


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


def _is_hostname(text: str) -> bool:
    labels = text.removesuffix(".").split(".")
    if len(text) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return False
    # All-numeric labels are an IPv4 address, and must be a valid one (not 999.1.1.1).
    return not all(label.isdigit() for label in labels) or _is_ip(text, 4)


def load(path: Path | None = None) -> Config:
    """Load `path`, or the default path; a missing default file means all defaults (legacy-script users).

    Everything is checked here, before fail2ban is read: a bad file is exit 2 naming the file and key."""
    explicit = path is not None
    path = path or DEFAULT_PATH
    data = read_toml(path)
    if data is None:
        if explicit:
            raise ConfigError(f"{path}: configuration file not found")
        data = {}
    return from_mapping(data, path)


def from_mapping(
    data: Mapping[str, Any], path: Path, *, zone_id_reader: Callable[[Path], str] | None = None
) -> Config:
    merged = _merge_defaults(data, path)
    v = _Validator(path, merged)
    account_id = v.string("cloudflare", "account_id")
    if account_id and not _ID.fullmatch(account_id):
        raise v.error("cloudflare", "account_id", "must be a 32-character hex account id")
    zone_ids = tuple(v.string_list("cloudflare", "zone_ids"))
    backend = v.choice("cloudflare", "backend", BACKENDS)
    waf_rule = v.choice("cloudflare", "waf_rule", WAF_RULES)
    list_name = v.string("cloudflare", "list_name")
    if not _LIST_NAME.fullmatch(list_name):
        raise v.error("cloudflare", "list_name", f"{list_name!r} must be 1-50 of a-z, 0-9 and '_'")
    if backend == "list":
        # The list is the account's; zone_ids names the zones whose WAF rule must reference it.
        if not account_id:
            raise v.error(
                "cloudflare", "account_id", 'required with backend = "list" (the list is the account\'s)'
            )
        if not zone_ids and waf_rule != "off":
            zone_ids = _read_zone_ids(v, zone_id_reader or _read_text, backend)
    elif account_id and zone_ids:
        raise v.error("cloudflare", "zone_ids", "set either zone_ids or account_id, not both")
    elif not account_id and not zone_ids:
        zone_ids = _read_zone_ids(v, zone_id_reader or _read_text)
    for zone in zone_ids:
        if not _ID.fullmatch(zone):
            raise v.error("cloudflare", "zone_ids", f"{zone!r} is not a 32-character hex zone id")

    mode = v.string("cloudflare", "mode")
    if mode not in MODES:
        raise v.error("cloudflare", "mode", f"must be one of {', '.join(MODES)}, not {mode!r}")
    tag = v.string("cloudflare", "tag").strip()
    if not tag or len(tag) > 100:
        raise v.error("cloudflare", "tag", "must be a non-empty string of at most 100 characters")

    host_id = v.string("policy", "host_id") or socket.gethostname().split(".")[0]
    if not _HOST_ID.fullmatch(host_id):
        raise v.error("policy", "host_id", f"{host_id!r} must be 1-63 letters, digits, '.', '_' or '-'")
    allowlist = []
    for cidr in v.string_list("policy", "allowlist"):
        try:
            allowlist.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise v.error("policy", "allowlist", f"{cidr!r} is not an IP address or CIDR") from None
    max_rule_age = v.duration("policy", "max_rule_age") if v.string("policy", "max_rule_age") else None
    fraction = v.number("policy", "max_expire_fraction")
    if not 0 <= fraction <= 1:
        raise v.error("policy", "max_expire_fraction", "must be between 0 and 1")

    command = tuple(v.string_list("fail2ban", "command"))
    if not command:
        raise v.error("fail2ban", "command", "must name the fail2ban-client program")
    timezone = v.string("fail2ban", "timezone")
    try:
        if timezone:
            zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise v.error("fail2ban", "timezone", f"unknown time zone {timezone!r} (an IANA name)") from None
    metrics = v.string("metrics", "textfile")
    token_file = v.string("cloudflare", "api_token_file")
    key_file = v.string("cloudflare", "api_key_file")
    api_base_url = v.string("cloudflare", "api_base_url").rstrip("/")
    if not api_base_url.startswith(("https://", "http://")):
        raise v.error("cloudflare", "api_base_url", "must be an https:// URL")
    try:
        whois_host, whois_port = parse_host_port(v.string("enrich", "whois_server"))
    except ValueError as exc:
        raise v.error("enrich", "whois_server", f"{exc} (e.g. whois.cymru.com:43)") from None
    return Config(
        path=path,
        fail2ban_command=command,
        jails=tuple(v.string_list("fail2ban", "jails")),
        fail2ban_timeout=v.positive("fail2ban", "timeout"),
        fail2ban_timezone=timezone,
        api_base_url=api_base_url,
        api_token_file=Path(token_file) if token_file else None,
        api_token_file_explicit="api_token_file" in data.get("cloudflare", {}),
        api_email=v.string("cloudflare", "api_email"),
        api_key_file=Path(key_file) if key_file else None,
        zone_ids=zone_ids,
        account_id=account_id,
        backend=backend,
        list_name=list_name,
        list_capacity=int(v.positive("cloudflare", "list_capacity", integer=True)),
        waf_rule=waf_rule,
        mode=mode,
        tag=tag,
        max_requests_per_run=int(v.positive("cloudflare", "max_requests_per_run", integer=True)),
        requests_per_minute=v.positive("cloudflare", "requests_per_minute"),
        http_timeout=v.positive("cloudflare", "timeout"),
        retries=int(v.number("cloudflare", "retries", integer=True)),
        host_id=host_id,
        allowlist=tuple(allowlist),
        max_rule_age=max_rule_age,
        max_expire_fraction=fraction,
        skip_cloudflare_ranges=v.boolean("policy", "skip_cloudflare_ranges"),
        lock_file=v.file_path("run", "lock_file"),
        max_seconds=v.positive("run", "max_seconds"),
        metrics_textfile=Path(metrics) if metrics else None,
        enrich_asn=v.boolean("enrich", "asn"),
        whois_host=whois_host,
        whois_port=whois_port,
        enrich_timeout=v.positive("enrich", "timeout"),
        asn_cache_file=v.file_path("enrich", "cache_file"),
        asn_cache_ttl=v.duration("enrich", "cache_ttl"),
    )


def _merge_defaults(data: Mapping[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    merged = {section: dict(values) for section, values in DEFAULTS.items()}
    for section, values in data.items():
        if section not in DEFAULTS:
            known = ", ".join(f"[{s}]" for s in DEFAULTS)
            raise ConfigError(f"{path}: unknown section [{section}] (known: {known})")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        for key, value in values.items():
            if key not in DEFAULTS[section]:
                raise ConfigError(f"{path}: unknown key [{section}] {key}")
            merged[section][key] = value
    return merged


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _read_zone_ids(v: _Validator, reader: Callable[[Path], str], backend: str = "rules") -> tuple[str, ...]:
    zone_file = v.string("cloudflare", "zone_id_file")
    if not zone_file:
        if backend == "list":
            raise v.error(
                "cloudflare",
                "zone_ids",
                'backend = "list" needs the zones whose WAF rule enforces the list '
                '(zone_ids or zone_id_file), or waf_rule = "off"',
            )
        raise v.error(
            "cloudflare", "zone_ids", "no zone configured: set zone_ids, zone_id_file or account_id"
        )
    try:
        ids = tuple(reader(Path(zone_file)).split())
    except FileNotFoundError:
        raise v.error(
            "cloudflare",
            "zone_ids",
            f"no zone configured: set zone_ids or account_id ({zone_file} not found)"
            if backend == "rules"
            else f'no zone for the WAF rule: set zone_ids, or waf_rule = "off" ({zone_file} not found)',
        ) from None
    except OSError as exc:
        raise v.error("cloudflare", "zone_id_file", f"cannot read {zone_file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise v.error("cloudflare", "zone_id_file", f"{zone_file} is not UTF-8 text") from None
    if not ids:
        raise v.error("cloudflare", "zone_id_file", f"{zone_file} is empty")
    return ids


class _Validator:
    """Type checks that name the offending key."""

    def __init__(self, path: Path, merged: Mapping[str, Mapping[str, Any]]) -> None:
        self.path = path
        self.merged = merged

    def error(self, section: str, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: [{section}] {key}: {problem}")

    def string(self, section: str, key: str) -> str:
        value = self.merged[section][key]
        if not isinstance(value, str):
            raise self.error(section, key, f"must be a string, not {type(value).__name__}")
        return value

    def string_list(self, section: str, key: str) -> list[str]:
        value = self.merged[section][key]
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise self.error(section, key, "must be a list of non-empty strings")
        return value

    def choice(self, section: str, key: str, choices: tuple[str, ...]) -> str:
        value = self.string(section, key)
        if value not in choices:
            raise self.error(section, key, f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    def number(self, section: str, key: str, *, integer: bool = False) -> float:
        """A finite number >= 0, at most LIMITS[section, key] when the key has a limit."""
        value = self.merged[section][key]
        ok = isinstance(value, int) if integer else isinstance(value, int | float)
        # isfinite only for floats: TOML integers are unbounded and float() of a huge one overflows.
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(section, key, f"must be a finite number, not {value!r}")
        if isinstance(value, bool) or not ok or value < 0:
            kind = "a whole number" if integer else "a number"
            raise self.error(section, key, f"must be {kind} >= 0, not {value!r}")
        limit, unit = LIMITS.get((section, key), (math.inf, ""))
        if value > limit:
            raise self.error(section, key, f"{value!r} is too large: at most {limit:g} {unit}")
        return float(value)

    def boolean(self, section: str, key: str) -> bool:
        value = self.merged[section][key]
        if not isinstance(value, bool):
            raise self.error(section, key, f"must be true or false, not {value!r}")
        return value

    def duration(self, section: str, key: str) -> timedelta:
        """A duration string (parse_duration), longer than zero."""
        try:
            value = parse_duration(self.string(section, key))
        except ValueError as exc:
            raise self.error(section, key, str(exc)) from None
        if value <= timedelta(0):
            raise self.error(section, key, "must be longer than zero")
        return value

    def file_path(self, section: str, key: str) -> Path:
        """A non-empty path with a file name (no NUL: open() would crash on it)."""
        value = self.string(section, key)
        if not value or "\0" in value or not Path(value).name:
            raise self.error(section, key, f"must be the path of a file, not {value!r}")
        return Path(value)

    def positive(self, section: str, key: str, *, integer: bool = False) -> float:
        value = self.number(section, key, integer=integer)
        if value <= 0:
            raise self.error(section, key, "must be greater than zero")
        return value
