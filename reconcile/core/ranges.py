"""Cloudflare's own address ranges, and what a ban inside them means (DESIGN §11). Pure.

A web server behind Cloudflare that does not restore the visitor's address logs Cloudflare's edge (or,
behind a Tunnel, 127.0.0.1) as the client, and fail2ban then bans Cloudflare itself. The ranges ship with
the package so that the check costs no request; `reconcile --check` compares them with `GET /ips`.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Mapping, Sequence

from reconcile.core.model import Ban, IPAddress, Network

# As published at https://www.cloudflare.com/ips-v4 and /ips-v6 (the same as `GET /ips`), in their order,
# as of PUBLISHED. They change rarely; `reconcile --check` says when Cloudflare's list differs.
PUBLISHED = "2026-10"
IPV4_TEXT = (
    "173.245.48.0/20",
    "103.21.244.0/22",
    "103.22.200.0/22",
    "103.31.4.0/22",
    "141.101.64.0/18",
    "108.162.192.0/18",
    "190.93.240.0/20",
    "188.114.96.0/20",
    "197.234.240.0/22",
    "198.41.128.0/17",
    "162.158.0.0/15",
    "104.16.0.0/13",
    "104.24.0.0/14",
    "172.64.0.0/13",
    "131.0.72.0/22",
)
IPV6_TEXT = (
    "2400:cb00::/32",
    "2606:4700::/32",
    "2803:f800::/32",
    "2405:b500::/32",
    "2405:8100::/32",
    "2a06:98c0::/29",
    "2c0f:f248::/32",
)

IPV4: tuple[ipaddress.IPv4Network, ...] = tuple(ipaddress.IPv4Network(n) for n in IPV4_TEXT)
IPV6: tuple[ipaddress.IPv6Network, ...] = tuple(ipaddress.IPv6Network(n) for n in IPV6_TEXT)

ALL: tuple[Network, ...] = (*IPV4, *IPV6)


class _Ranges:
    """Sorted, disjoint [first, last] integer intervals: one bisect per lookup (it runs for every ban)."""

    def __init__(self, networks: Iterable[Network]) -> None:
        spans = sorted((int(n.network_address), int(n.broadcast_address)) for n in networks)
        self.firsts = [first for first, _ in spans]
        self.lasts = [last for _, last in spans]

    def __contains__(self, value: int) -> bool:
        i = bisect.bisect_right(self.firsts, value) - 1
        return i >= 0 and value <= self.lasts[i]


_BY_VERSION = {4: _Ranges(IPV4), 6: _Ranges(IPV6)}


def _unmapped(ip: IPAddress) -> IPAddress:
    # A dual-stack socket logs an IPv4 client as ::ffff:a.b.c.d; it is still that IPv4 address.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_cloudflare(ip: IPAddress) -> bool:
    """True for an address inside Cloudflare's published ranges (IPv4-mapped IPv6 included)."""
    ip = _unmapped(ip)
    return int(ip) in _BY_VERSION[ip.version]


def is_loopback(ip: IPAddress) -> bool:
    """127.0.0.0/8 and ::1 (and ::ffff:127.x): what a web server behind a Cloudflare Tunnel logs."""
    return _unmapped(ip).is_loopback


def is_misconfiguration(ip: IPAddress) -> bool:
    """A ban of this address means the web server does not see the visitor's address (§11)."""
    return is_cloudflare(ip) or is_loopback(ip)


# Where a banned address means a misconfigured web server, as [first, last] integers per IP version: 127/8
# and Cloudflare's IPv4; ::1, Cloudflare's IPv6, and the IPv4 ones mapped into ::ffff:0:0/96 (_unmapped).
_MAPPED = 0xFFFF << 32
_V4_SPANS = [(0x7F000000, 0x7FFFFFFF), *zip(_BY_VERSION[4].firsts, _BY_VERSION[4].lasts, strict=True)]
_MISCONFIGURED = {
    4: _V4_SPANS,
    6: [
        (1, 1),
        *zip(_BY_VERSION[6].firsts, _BY_VERSION[6].lasts, strict=True),
        *((_MAPPED | first, _MAPPED | last) for first, last in _V4_SPANS),
    ],
}


def _order(ban: Ban) -> tuple[int, int]:
    return ban.ip.version, int(ban.ip)


def misconfigured_examples(bans: Sequence[Ban]) -> dict[str, str]:
    """jail -> one banned Cloudflare or loopback address of it: what the warning names (empty: none).

    `bans` in merge's order (by IP version, then address): the bans inside each range are found by
    bisection, a few dozen looks instead of a test of every ban of every run. Each jail's example is its
    first such ban in that order.
    """
    inside: set[int] = set()
    for version, spans in _MISCONFIGURED.items():
        for first, last in spans:
            start = bisect.bisect_left(bans, (version, first), key=_order)
            inside.update(range(start, bisect.bisect_right(bans, (version, last), lo=start, key=_order)))
    examples: dict[str, str] = {}
    for index in sorted(inside):
        ban = bans[index]
        for jail in ban.jails:
            examples.setdefault(jail, ban.ip.compressed)
    return examples


def misconfiguration_warning(examples: Mapping[str, str]) -> str:
    """The one warning of a run that saw bans of Cloudflare or loopback addresses: one line, with the fix.

    `examples` maps each jail that holds such a ban to one such address in it. One line, so that journald
    and cron mail keep it whole; the nginx part is valid configuration as it stands.
    """
    if not examples:
        raise ValueError("misconfiguration_warning needs at least one jail")
    jails = sorted(examples)
    example_jail = jails[0]
    example = examples[example_jail]
    parsed = [_parse(value) for value in examples.values()]
    cloudflare = any(ip is not None and is_cloudflare(ip) for ip in parsed)
    loopback = any(ip is not None and is_loopback(ip) for ip in parsed)
    if not (cloudflare or loopback):  # the caller's classification differs from ours: give every fix
        cloudflare = loopback = True

    whose = " and ".join(
        what for what, seen in (("Cloudflare's own", cloudflare), ("loopback", loopback)) if seen
    )
    label = "jail" if len(jails) == 1 else "jails"
    parts = [
        f"fail2ban bans {whose} addresses ({label} {', '.join(jails)}; e.g. {example} in {example_jail}): "
        "the web server logs the proxy's address instead of the visitor's, so these bans block every "
        "visitor locally and mean nothing at Cloudflare. Fix the web server "
        "to take the visitor's address from the CF-Connecting-IP header, then unban these addresses."
    ]
    if cloudflare:
        every = IPV4_TEXT + IPV6_TEXT
        parts.append(
            "nginx (ngx_http_realip_module): real_ip_header CF-Connecting-IP; "
            + " ".join(f"set_real_ip_from {net};" for net in every)
        )
        parts.append(
            "Apache: a2enmod remoteip, then RemoteIPHeader CF-Connecting-IP and RemoteIPTrustedProxy "
            + " ".join(every)
        )
    if loopback:
        parts.append(
            "Behind a Cloudflare Tunnel (cloudflared connects from localhost): nginx real_ip_header "
            "CF-Connecting-IP; set_real_ip_from 127.0.0.1; set_real_ip_from ::1; Apache RemoteIPHeader "
            "CF-Connecting-IP and RemoteIPTrustedProxy 127.0.0.1 ::1"
        )
    parts.append(
        f"(Cloudflare's ranges as published in {PUBLISHED}; current list: https://www.cloudflare.com/ips)"
    )
    return " | ".join(parts)


def differences(published_v4: Sequence[str], published_v6: Sequence[str]) -> list[str]:
    """What differs between the shipped ranges and Cloudflare's (`GET /ips`: ipv4_cidrs, ipv6_cidrs).

    An empty list: they agree (order and the host bits of a CIDR do not matter). One line per difference.
    """
    found: list[str] = []
    published: set[Network] = set()
    for value in (*published_v4, *published_v6):
        try:
            published.add(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            found.append(f"Cloudflare lists {value!r}, which is not a network")
    shipped = set(ALL)
    key = _network_key
    found += [
        f"Cloudflare publishes {net}, not in the ranges shipped with reconcile ({PUBLISHED})"
        for net in sorted(published - shipped, key=key)
    ]
    found += [
        f"{net} ships with reconcile ({PUBLISHED}) but Cloudflare no longer publishes it"
        for net in sorted(shipped - published, key=key)
    ]
    return found


def _network_key(net: Network) -> tuple[int, int, int]:
    return net.version, int(net.network_address), net.prefixlen


def _parse(value: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None
