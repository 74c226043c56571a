"""Configuration: TOML in, a frozen Config out. Every error names the file and the key.

The keys are the fields of the section dataclasses (config_keys); config_parse turns each TOML table into
one; what is left here is the file, and the rules that span keys.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

from reconcile.config_file import read_toml
from reconcile.config_keys import (
    CloudflareSection,
    EnrichSection,
    Fail2banSection,
    MetricsSection,
    PolicySection,
    RunSection,
    valid_host_id,
    valid_zone_id,
)
from reconcile.config_parse import key_error, parse_section, refuse_unknown
from reconcile.errors import ConfigError

DEFAULT_PATH = Path("/etc/fail2ban/cloudflare-reconcile.toml")


@dataclass(frozen=True)
class Config:
    """One field per TOML section, named as the section; `config.<section>.<key>` is the key's value."""

    path: Path
    fail2ban: Fail2banSection
    cloudflare: CloudflareSection
    policy: PolicySection
    run: RunSection
    metrics: MetricsSection
    enrich: EnrichSection


# section name -> its dataclass, in the order of Config's fields (and of "unknown section" messages).
SECTIONS: dict[str, type[Any]] = {
    f.name: get_type_hints(Config)[f.name] for f in fields(Config) if f.name != "path"
}


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
    """The Config of the tables `data` (TOML's), read from `path` (named in every error)."""
    refuse_unknown(data, SECTIONS, path)
    sections = {name: parse_section(cls, data.get(name, {}), path, name) for name, cls in SECTIONS.items()}
    config = Config(path=path, **sections)
    return _across_keys(config, data, zone_id_reader or read_zone_id_file)


def read_zone_id_file(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _across_keys(config: Config, data: Mapping[str, Any], read_zone_ids: Callable[[Path], str]) -> Config:
    """The rules no single key holds: where the zones come from, and the hostname as the default host_id."""
    cloudflare, path = config.cloudflare, config.path
    zone_ids = cloudflare.zone_ids
    if cloudflare.backend == "list":
        # The list is the account's; zone_ids names the zones whose WAF rule must reference it.
        if not cloudflare.account_id:
            raise key_error(
                path,
                "cloudflare",
                "account_id",
                'required with backend = "list" (the list is the account\'s)',
            )
        if not zone_ids and cloudflare.waf_rule != "off":
            zone_ids = _zone_ids_from_file(cloudflare, path, read_zone_ids)
    elif cloudflare.account_id and zone_ids:
        raise key_error(path, "cloudflare", "zone_ids", "set either zone_ids or account_id, not both")
    elif not cloudflare.account_id and not zone_ids:
        zone_ids = _zone_ids_from_file(cloudflare, path, read_zone_ids)
    # A zone listed twice is one zone: planned twice, its rules would be deleted twice (DESIGN §7).
    zone_ids = tuple(dict.fromkeys(zone_ids))
    for zone in zone_ids:
        try:
            valid_zone_id(zone)
        except ValueError as exc:
            raise key_error(path, "cloudflare", "zone_ids", str(exc)) from None
    try:
        # Lower case: host names are compared so in notes (DNS does not tell WEB1 from web1; DESIGN §4).
        host_id = valid_host_id(config.policy.host_id or socket.gethostname().split(".")[0]).lower()
    except ValueError as exc:
        raise key_error(path, "policy", "host_id", str(exc)) from None
    explicit = "api_token_file" in data.get("cloudflare", {})
    return replace(
        config,
        cloudflare=replace(cloudflare, zone_ids=zone_ids, api_token_file_explicit=explicit),
        policy=replace(config.policy, host_id=host_id),
    )


def _zone_ids_from_file(
    cloudflare: CloudflareSection, path: Path, read: Callable[[Path], str]
) -> tuple[str, ...]:
    zone_file, backend = cloudflare.zone_id_file, cloudflare.backend
    if zone_file is None:
        if backend == "list":
            raise key_error(
                path,
                "cloudflare",
                "zone_ids",
                'backend = "list" needs the zones whose WAF rule enforces the list '
                '(zone_ids or zone_id_file), or waf_rule = "off"',
            )
        raise key_error(
            path, "cloudflare", "zone_ids", "no zone configured: set zone_ids, zone_id_file or account_id"
        )
    try:
        ids = tuple(read(zone_file).split())
    except FileNotFoundError:
        raise key_error(
            path,
            "cloudflare",
            "zone_ids",
            f"no zone configured: set zone_ids or account_id ({zone_file} not found)"
            if backend == "rules"
            else f'no zone for the WAF rule: set zone_ids, or waf_rule = "off" ({zone_file} not found)',
        ) from None
    except OSError as exc:
        raise key_error(
            path, "cloudflare", "zone_id_file", f"cannot read {zone_file}: {exc.strerror}"
        ) from None
    except UnicodeDecodeError:
        raise key_error(path, "cloudflare", "zone_id_file", f"{zone_file} is not UTF-8 text") from None
    if not ids:
        raise key_error(path, "cloudflare", "zone_id_file", f"{zone_file} is empty")
    return ids
