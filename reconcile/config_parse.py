"""The generic loader: one TOML table -> one section dataclass (config_keys), typed by its annotations.

Each key's value is parsed by the parser of its field's type, bounded by its metadata, then given to the
key's own check; every refusal is a ConfigError naming the file, the section and the key (exit 2).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from reconcile.config_keys import HostPort, Key, Network, key_fields, spec
from reconcile.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

S = TypeVar("S", bound="DataclassInstance")

MAX_DURATION = timedelta(days=3650)  # max_rule_age, cache_ttl: ten years is already "never"
WHOIS_PORT = 43

_DURATION = re.compile(r"\s*([0-9]{1,20})\s*([smhdw]?)\s*")  # [0-9], not \d: no other scripts' digits
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_BRACKETED = re.compile(r"\[([^\]]*)\](?::([0-9]{1,5}))?")


def key_error(path: Path, section: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{path}: [{section}] {key}: {problem}")


def refuse_unknown(data: Mapping[str, Any], sections: Mapping[str, type[Any]], path: Path) -> None:
    """Every section a table the loader knows, every key one of its section's keys."""
    for section, values in data.items():
        if section not in sections:
            known = ", ".join(f"[{s}]" for s in sections)
            raise ConfigError(f"{path}: unknown section [{section}] (known: {known})")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        names = {f.name for f in key_fields(sections[section])}
        for key in values:
            if key not in names:
                raise ConfigError(f"{path}: unknown key [{section}] {key}")


def parse_section(cls: type[S], table: Mapping[str, Any], path: Path, section: str) -> S:
    """The section's dataclass: the table's keys parsed (in field order), the others their defaults."""
    hints = get_type_hints(cls)
    values = {}
    for f in key_fields(cls):
        if f.name in table:
            try:
                values[f.name] = parse_value(hints[f.name], spec(f), table[f.name])
            except ValueError as exc:
                raise key_error(path, section, f.name, str(exc)) from None
    return replace(cls(), **values)


def parse_value(hint: Any, key: Key, raw: object) -> Any:
    """One key's value, of the field type `hint`; ValueError (the problem) when it is not one."""
    if get_origin(hint) is Literal:
        value: Any = _choice(raw, get_args(hint))
    else:
        value = _PARSERS[hint](raw, key)
    return key.check(value) if key.check else value


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


# --- one parser per field type: the raw TOML value -> the field's value, or ValueError(problem) ---------


def _string(raw: object, key: Key | None = None) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"must be a string, not {type(raw).__name__}")
    return raw


def _strings(raw: object, key: Key | None = None) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(item, str) and item for item in raw):
        raise ValueError("must be a list of non-empty strings")
    return tuple(raw)


def _networks(raw: object, key: Key) -> tuple[Network, ...]:
    networks = []
    for cidr in _strings(raw):
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise ValueError(f"{cidr!r} is not an IP address or CIDR") from None
    return tuple(networks)


def _choice(raw: object, choices: tuple[str, ...]) -> str:
    value = _string(raw)
    if value not in choices:
        raise ValueError(f"must be one of {', '.join(choices)}, not {value!r}")
    return value


def _boolean(raw: object, key: Key) -> bool:
    if not isinstance(raw, bool):
        raise ValueError(f"must be true or false, not {raw!r}")
    return raw


def _number(raw: object, key: Key, *, integer: bool = False) -> float:
    """A finite number >= 0, at most the key's max, above zero when the key says so."""
    # isfinite only for floats: TOML integers are unbounded and float() of a huge one overflows.
    if isinstance(raw, float) and not math.isfinite(raw):
        raise ValueError(f"must be a finite number, not {raw!r}")
    if isinstance(raw, bool) or not isinstance(raw, int if integer else int | float) or raw < 0:
        kind = "a whole number" if integer else "a number"
        raise ValueError(f"must be {kind} >= 0, not {raw!r}")
    if key.max is not None and raw > key.max:
        raise ValueError(f"{raw!r} is too large: at most {key.max:g} {key.unit}")
    if key.positive and raw <= 0:
        raise ValueError("must be greater than zero")
    return float(raw)


def _float(raw: object, key: Key) -> float:
    return _number(raw, key)


def _integer(raw: object, key: Key) -> int:
    return int(_number(raw, key, integer=True))


def _file_path(raw: object, key: Key) -> Path:
    """A non-empty path with a file name (no NUL: open() would crash on it)."""
    value = _string(raw)
    if not value or "\0" in value or not Path(value).name:
        raise ValueError(f"must be the path of a file, not {value!r}")
    return Path(value)


def _optional_path(raw: object, key: Key) -> Path | None:
    """Empty: none."""
    value = _string(raw)
    return Path(value) if value else None


def _duration(raw: object, key: Key) -> timedelta:
    """A duration string (parse_duration), longer than zero."""
    value = parse_duration(_string(raw))
    if value <= timedelta(0):
        raise ValueError("must be longer than zero")
    return value


def _optional_duration(raw: object, key: Key) -> timedelta | None:
    """Empty: none."""
    return _duration(raw, key) if _string(raw) else None


def _host_port(raw: object, key: Key) -> HostPort:
    text = _string(raw)
    try:
        return HostPort(*parse_host_port(text))
    except ValueError as exc:
        raise ValueError(f"{exc} (e.g. whois.cymru.com:43)") from None


_PARSERS: dict[Any, Callable[[object, Key], Any]] = {
    str: _string,
    bool: _boolean,
    int: _integer,
    float: _float,
    tuple[str, ...]: _strings,
    tuple[Network, ...]: _networks,
    Path: _file_path,
    Path | None: _optional_path,
    timedelta: _duration,
    timedelta | None: _optional_duration,
    HostPort: _host_port,
}
