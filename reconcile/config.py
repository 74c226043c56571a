"""Configuration: TOML in, a frozen Config out. Every error names the file and the key."""

from __future__ import annotations

import ipaddress
import re
import socket
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from reconcile.errors import ConfigError

DEFAULT_PATH = Path("/etc/fail2ban/cloudflare-reconcile.toml")
MODES = ("block", "managed_challenge", "challenge", "js_challenge")

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
    },
    "run": {
        "lock_file": "/run/lock/cloudflare-reconcile.lock",
        "max_seconds": 100.0,
    },
    "metrics": {
        "textfile": "",
    },
}

_ID = re.compile(r"^[0-9a-f]{32}$")
_HOST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


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
    # [run]
    lock_file: Path
    max_seconds: float
    # [metrics]
    metrics_textfile: Path | None


def parse_duration(text: str) -> timedelta:
    """`90`, `90s`, `15m`, `12h`, `7d`, `2w` -> timedelta; ValueError otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 3600, 90m, 12h, 7d, 2w)")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def load(path: Path | None = None) -> Config:
    """Load `path`, or the default path; a missing default file means all defaults (legacy-script users)."""
    explicit = path is not None
    path = path or DEFAULT_PATH
    data: dict[str, Any] = {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{path}: configuration file not found") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied reading the configuration") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return from_mapping(data, path)


def from_mapping(
    data: Mapping[str, Any], path: Path, *, zone_id_reader: Callable[[Path], str] | None = None
) -> Config:
    merged = _merge_defaults(data, path)
    v = _Validator(path, merged)
    account_id = v.string("cloudflare", "account_id")
    if account_id and not _ID.match(account_id):
        raise v.error("cloudflare", "account_id", "must be a 32-character hex account id")
    zone_ids = tuple(v.string_list("cloudflare", "zone_ids"))
    if account_id and zone_ids:
        raise v.error("cloudflare", "zone_ids", "set either zone_ids or account_id, not both")
    if not account_id and not zone_ids:
        zone_ids = _read_zone_ids(v, zone_id_reader or _read_text)
    for zone in zone_ids:
        if not _ID.match(zone):
            raise v.error("cloudflare", "zone_ids", f"{zone!r} is not a 32-character hex zone id")

    mode = v.string("cloudflare", "mode")
    if mode not in MODES:
        raise v.error("cloudflare", "mode", f"must be one of {', '.join(MODES)}, not {mode!r}")
    tag = v.string("cloudflare", "tag").strip()
    if not tag or len(tag) > 100:
        raise v.error("cloudflare", "tag", "must be a non-empty string of at most 100 characters")

    host_id = v.string("policy", "host_id") or socket.gethostname().split(".")[0]
    if not _HOST_ID.match(host_id):
        raise v.error("policy", "host_id", f"{host_id!r} must be 1-63 letters, digits, '.', '_' or '-'")
    allowlist = []
    for cidr in v.string_list("policy", "allowlist"):
        try:
            allowlist.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise v.error("policy", "allowlist", f"{cidr!r} is not an IP address or CIDR") from None
    age_text = v.string("policy", "max_rule_age")
    try:
        max_rule_age = parse_duration(age_text) if age_text else None
    except ValueError as exc:
        raise v.error("policy", "max_rule_age", str(exc)) from None
    if max_rule_age is not None and max_rule_age <= timedelta(0):
        raise v.error("policy", "max_rule_age", "must be longer than zero")
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
        lock_file=Path(v.string("run", "lock_file")),
        max_seconds=v.positive("run", "max_seconds"),
        metrics_textfile=Path(metrics) if metrics else None,
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


def _read_zone_ids(v: _Validator, reader: Callable[[Path], str]) -> tuple[str, ...]:
    zone_file = v.string("cloudflare", "zone_id_file")
    if not zone_file:
        raise v.error(
            "cloudflare", "zone_ids", "no zone configured: set zone_ids, zone_id_file or account_id"
        )
    try:
        ids = tuple(reader(Path(zone_file)).split())
    except FileNotFoundError:
        raise v.error(
            "cloudflare",
            "zone_ids",
            f"no zone configured: set zone_ids or account_id ({zone_file} not found)",
        ) from None
    except OSError as exc:
        raise v.error("cloudflare", "zone_id_file", f"cannot read {zone_file}: {exc.strerror}") from None
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

    def number(self, section: str, key: str, *, integer: bool = False) -> float:
        value = self.merged[section][key]
        ok = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok or value < 0:
            kind = "a whole number" if integer else "a number"
            raise self.error(section, key, f"must be {kind} >= 0, not {value!r}")
        return float(value)

    def positive(self, section: str, key: str, *, integer: bool = False) -> float:
        value = self.number(section, key, integer=integer)
        if value <= 0:
            raise self.error(section, key, "must be greater than zero")
        return value
