"""fail2ban's entries merged into one ban per address (DESIGN §2): what is an address, and the latest end
among its jails.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from reconcile.core.model import Ban, BanEntry, IPAddress


def address_of(value: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:  # fe80::1%eth0 names an interface, not a host to block
            return None
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
    return ip


def merge(entries: Iterable[BanEntry]) -> tuple[list[Ban], list[BanEntry]]:
    """One Ban per valid address (sorted by version, then address) and the entries that are no address."""
    by_ip: dict[IPAddress, list[BanEntry]] = {}
    invalid: list[BanEntry] = []
    for entry in entries:
        ip = address_of(entry.value)
        if ip is None:
            invalid.append(entry)
        else:
            by_ip.setdefault(ip, []).append(entry)
    bans = []
    for ip in sorted(by_ip, key=lambda a: (a.version, int(a))):
        group = by_ip[ip]
        ends = [e.end for e in group]
        until = None if any(end is None for end in ends) else max(end for end in ends if end is not None)
        bans.append(
            Ban(
                ip=ip,
                jails=tuple(sorted({e.jail for e in group})),
                since=min(e.start for e in group),
                until=until,
            )
        )
    return bans, invalid
