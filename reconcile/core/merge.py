"""fail2ban's entries merged into one ban per address (DESIGN §2): what is an address, and the latest end
among its jails.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from reconcile.core.collector import collector_paused
from reconcile.core.model import Ban, BanEntry, IPAddress, Rule, make_ban
from reconcile.core.sanitize import cut

# Exactly the IPv4 text ipaddress accepts (four decimal octets 0-255, no leading zero): parsed here in one
# match instead of ipaddress's per-octet Python, two thirds of merging 40,000 bans. Anything else (IPv6,
# junk) takes the general path, which decides as before.
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")


def dotted_quad(value: str) -> ipaddress.IPv4Address | None:
    """`ipaddress.IPv4Address(value)` for the text it accepts, None for any other (then ask ipaddress)."""
    dotted = _IPV4.fullmatch(value)
    if dotted is None:
        return None
    a, b, c, d = dotted.groups()
    return ipaddress.IPv4Address((int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d))


def is_dotted_quad(value: str) -> bool:
    """Whether `value` is an IPv4 address exactly as ipaddress writes it (so its own compressed text)."""
    return _IPV4.fullmatch(value) is not None


def address_of(value: str) -> IPAddress | None:
    dotted = dotted_quad(value)
    if dotted is not None:
        return dotted
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


def rule_address(rule: Rule) -> tuple[IPAddress, str] | None:
    """The address of an ip/ip6 rule and its compressed text: one parse (rule_key's normalised form parses
    to the same address)."""
    if rule.target not in ("ip", "ip6"):
        return None
    try:
        # The target's own class first: ip_address tries IPv4 first, and its failure costs as much again.
        if rule.target == "ip6":
            ip: IPAddress = ipaddress.IPv6Address(rule.value)
        else:
            # Every other host's rule is parsed on every run of every host: one regex, not ipaddress's
            # Python; and what it reads is the compressed text already (ipaddress writes it in Python too).
            dotted = dotted_quad(rule.value)
            if dotted is not None:
                return dotted, rule.value
            ip = ipaddress.IPv4Address(rule.value)
    except ValueError:
        try:
            ip = ipaddress.ip_address(rule.value)  # the other family, as rule_key would accept it
        except ValueError:
            return None
    return ip, ip.compressed


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
    # As for planning: many small objects, none in a cycle; the cyclic collector would re-scan them all.
    with collector_paused():
        return _merge(entries)


def _merge(entries: Iterable[BanEntry]) -> tuple[list[Ban], list[BanEntry]]:
    # Keyed by (version, integer): the sort order, and a tuple hashes in C where an address hashes in Python.
    by_key: dict[tuple[int, int], tuple[IPAddress, list[BanEntry]]] = {}
    invalid: list[BanEntry] = []
    for entry in entries:
        dotted = _IPV4.fullmatch(entry.value)
        if dotted is not None:  # dotted_quad inline: its key from the integer, not the address's properties
            a, b, c, d = dotted.groups()
            n = (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)
            known = by_key.get((4, n))
            if known is None:
                by_key[(4, n)] = (ipaddress.IPv4Address(n), [entry])
            else:
                known[1].append(entry)
            continue
        ip = address_of(entry.value)
        if ip is None:
            invalid.append(entry)
            continue
        key = (ip.version, int(ip))
        known = by_key.get(key)
        if known is None:
            by_key[key] = (ip, [entry])
        else:
            known[1].append(entry)
    bans = []
    for order in sorted(by_key):
        ip, group = by_key[order]
        if len(group) == 1:  # nearly always: one jail bans the address
            only = group[0]
            bans.append(make_ban(ip, (only.jail,), only.start, only.end))
            continue
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
