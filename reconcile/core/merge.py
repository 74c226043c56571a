"""fail2ban's entries merged into one ban per address (DESIGN §2): what is an address, and the latest end
among its jails.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from reconcile.core.model import Ban, BanEntry, IPAddress
from reconcile.core.sanitize import cut


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


def read_address(text: str) -> tuple[IPAddress, str]:
    """An address given by a person (`--explain`), read as a ban is read (DESIGN §7): the IP, and a sentence
    when it was read as another spelling (an IPv4-mapped address is its IPv4 address), else ''.

    ValueError, with a message that shows at most the start of `text`, when it is not one IP address.
    """
    value = text.strip()
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"not an IP address: '{cut(value, 60)}'") from None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            raise ValueError(f"{cut(value, 60)} is a scoped address: it names an interface, not one IP")
        if ip.ipv4_mapped is not None:
            mapped = ip.ipv4_mapped
            return (
                mapped,
                f"{cut(value, 60)} is the IPv4-mapped form of {mapped}: read as {mapped}, as a ban is",
            )
    return ip, ""


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
