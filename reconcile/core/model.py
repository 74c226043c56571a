"""Plain values shared by the core and the edges: bans, rules, scopes."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class BanEntry:
    """One line of `fail2ban-client get JAIL banip --with-time`, as fail2ban reported it.

    `value` is the raw string: fail2ban accepts anything as an "IP", so it is validated later.
    Times are timezone-aware (UTC); `end` is None for a permanent ban (`+ -1`).
    """

    jail: str
    value: str
    start: datetime
    end: datetime | None


@dataclass(frozen=True)
class Fail2banState:
    """Everything read from fail2ban in one run: the jails asked and every entry they hold."""

    jails: tuple[str, ...]
    entries: tuple[BanEntry, ...]


@dataclass(frozen=True)
class Ban:
    """One desired block: an IP banned in one or more jails, merged.

    `since` is the earliest start, `until` the latest end (None: permanent).
    """

    ip: IPAddress
    jails: tuple[str, ...]
    since: datetime
    until: datetime | None


_new = object.__new__
_set = object.__setattr__


def ban_entry(jail: str, value: str, start: datetime, end: datetime | None) -> BanEntry:
    """`BanEntry(...)` without the frozen dataclass's __init__ (a setattr per field): one per line fail2ban
    prints, 40,000 for a 40,000-ban report. Equal to it: tests/unit/test_plan_speed.py compares."""
    made = _new(BanEntry)
    _set(made, "__dict__", {"jail": jail, "value": value, "start": start, "end": end})
    return made


def make_ban(ip: IPAddress, jails: tuple[str, ...], since: datetime, until: datetime | None) -> Ban:
    """`Ban(...)` the same way: one per banned address."""
    made = _new(Ban)
    _set(made, "__dict__", {"ip": ip, "jails": jails, "since": since, "until": until})
    return made


class ScopeKind(StrEnum):
    ZONE = "zone"
    ACCOUNT = "account"  # a rule there covers every zone of the account
    LIST = "list"  # the account IP list (DESIGN §9): its id is the list's


@dataclass(frozen=True)
class Scope:
    """Where blocks live: one zone's or one account's IP Access Rules, or the account IP list."""

    kind: ScopeKind
    id: str

    @property
    def rules_path(self) -> str:
        prefix = "zones" if self.kind == ScopeKind.ZONE else "accounts"
        return f"/{prefix}/{self.id}/firewall/access_rules/rules"

    def __str__(self) -> str:
        return f"{self.kind} {self.id}"


@dataclass(frozen=True)
class Rule:
    """One IP Access Rule as Cloudflare listed it."""

    id: str
    scope: Scope
    target: str  # ip | ip6 | ip_range | asn | country
    value: str
    mode: str
    notes: str
    created_on: datetime | None = None
    modified_on: datetime | None = None


@dataclass(frozen=True)
class RuleListing:
    """The managed-candidate rules of one scope; `complete` is False when a page could not be read."""

    scope: Scope
    rules: tuple[Rule, ...]
    complete: bool = True


def rule_target(ip: IPAddress) -> str:
    """Cloudflare's configuration target for an address."""
    return "ip" if ip.version == 4 else "ip6"


def rule_key(target: str, value: str) -> tuple[str, str]:
    """Identity of a rule within a scope, normalised so `2001:DB8::1` and `2001:db8::1` agree."""
    if target in ("ip", "ip6"):
        try:
            return target, ipaddress.ip_address(value).compressed
        except ValueError:
            pass
    return target, value


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
