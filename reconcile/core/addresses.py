"""Which addresses are never blocked (DESIGN §2, §11): the built-in non-global ranges, the allowlist and
Cloudflare's own ranges, as one bisection over integer intervals.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
from collections.abc import Iterable, Sequence
from enum import IntEnum

from reconcile.core.model import IPAddress, Network

# Python 3.11's `is_global` already excludes these; named here so the rule does not depend on that.
DOCUMENTATION = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)


# Special-purpose networks (IANA's registries, as Python's `ipaddress` versions have known them). Only their
# boundaries are used, as cut points for the interval tables below: a superset is harmless, a missing one not,
# so `ipaddress`'s own tables are read too (_stdlib_networks).
_SPECIAL = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.0.0/29", "192.0.0.8/32", "192.0.0.9/32", "192.0.0.10/32", "192.0.0.170/31",
        "192.0.2.0/24", "192.31.196.0/24", "192.52.193.0/24", "192.88.99.0/24", "192.168.0.0/16",
        "192.175.48.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4",
        "240.0.0.0/4", "255.255.255.255/32",
        "::/128", "::1/128", "::/8", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64",
        "100::/8", "2001::/23", "2001::/32", "2001:1::1/128", "2001:1::2/128", "2001:1::3/128",
        "2001:2::/48", "2001:3::/32", "2001:4:112::/48", "2001:10::/28", "2001:20::/28", "2001:30::/28",
        "2001:db8::/32", "2002::/16", "2620:4f:8000::/48", "3fff::/20", "5f00::/16", "fc00::/7",
        "fe80::/10", "fec0::/10", "ff00::/8",
    )
)  # fmt: skip


_MAPPED = 0xFFFF << 32  # ::ffff:0:0/96: `ipaddress` judges an IPv4-mapped IPv6 address by its IPv4 address


def _stdlib_networks() -> list[Network]:
    """Every network in `ipaddress`'s private constant tables (their names differ between versions)."""
    found: list[Network] = []
    for name in ("_IPv4Constants", "_IPv6Constants"):
        for value in vars(getattr(ipaddress, name, object)).values():
            items = value if isinstance(value, list | tuple) else [value]
            found += [v for v in items if isinstance(v, ipaddress.IPv4Network | ipaddress.IPv6Network)]
    return found


class Skip(IntEnum):
    """Why a ban gets no rule for its address alone (before any lease is looked at)."""

    NONE = 0
    ALLOWLISTED = 1
    CLOUDFLARE = 2


class Classifier:
    """`is_allowlisted` and the Cloudflare-range check as one bisection over integer intervals.

    The slow definition is evaluated once per elementary interval between the boundaries of every network
    it can depend on (`ipaddress`'s tables, the documentation ranges, the allowlist, Cloudflare's ranges),
    so the answer is the same for every address: asked for 100,000 bans, `is_global` and the `in` checks
    per ban cost several times the rest of the planner.
    """

    def __init__(self, allowlist: Iterable[Network], cloudflare_ranges: Iterable[Network]) -> None:
        allow, cloudflare = tuple(allowlist), tuple(cloudflare_ranges)
        networks = (*_SPECIAL, *_stdlib_networks(), *DOCUMENTATION, *allow, *cloudflare)
        self._tables: dict[int, tuple[list[int], list[Skip]]] = {}
        for version, make, top in ((4, ipaddress.IPv4Address, 2**32), (6, ipaddress.IPv6Address, 2**128)):
            cuts = {0}
            for net in networks:
                first, after = int(net.network_address), int(net.broadcast_address) + 1
                if net.version == version:
                    cuts.update((first, after))
                elif version == 6:  # the same boundaries inside ::ffff:0:0/96
                    cuts.update((_MAPPED | first, _MAPPED | after))
            starts: list[int] = []
            kinds: list[Skip] = []
            for start in sorted(c for c in cuts if c < top):
                kind = _skip_slowly(make(start), allow, cloudflare)
                if not kinds or kinds[-1] is not kind:  # runs of one kind merge into one interval
                    starts.append(start)
                    kinds.append(kind)
            self._tables[version] = (starts, kinds)
        self._v4 = self._tables[4]

    def __call__(self, ip: IPAddress) -> Skip:
        # A type test, not the `version` property (a Python call): this runs for every ban.
        starts, kinds = self._v4 if type(ip) is ipaddress.IPv4Address else self._tables[ip.version]
        return kinds[bisect.bisect_right(starts, int(ip)) - 1]

    def keyed(self, ip: IPAddress) -> tuple[str, Skip]:
        """`(compressed(ip), self(ip))` in one call, an IPv4 address's integer read once: the planner asks
        both for every ban. The same pair: tests/unit/test_plan_speed.py compares."""
        if type(ip) is ipaddress.IPv4Address:
            n = int(ip)
            starts, kinds = self._v4
            text = "%d.%d.%d.%d" % (n >> 24, n >> 16 & 255, n >> 8 & 255, n & 255)  # noqa: UP031
            return text, kinds[bisect.bisect_right(starts, n) - 1]
        return compressed(ip), self(ip)


@functools.lru_cache(maxsize=16)
def classifier(allowlist: tuple[Network, ...], cloudflare_ranges: tuple[Network, ...]) -> Classifier:
    """One Classifier per policy: a run plans once, tests plan thousands of times with few policies."""
    return Classifier(allowlist, cloudflare_ranges)


def _skip_slowly(ip: IPAddress, allowlist: Sequence[Network], cloudflare: Sequence[Network]) -> Skip:
    """The definition the Classifier follows (and its tests compare against)."""
    if is_allowlisted(ip, allowlist):
        return Skip.ALLOWLISTED
    if any(ip.version == net.version and ip in net for net in cloudflare):
        return Skip.CLOUDFLARE
    return Skip.NONE


def is_built_in_allowlisted(ip: IPAddress) -> bool:
    """Never a visitor to block: not global, multicast (`is_global` for Python), or documentation."""
    return not ip.is_global or ip.is_multicast or any(ip in net for net in DOCUMENTATION)


def is_allowlisted(ip: IPAddress, allowlist: Iterable[Network]) -> bool:
    if is_built_in_allowlisted(ip):
        return True
    return any(ip.version == net.version and ip in net for net in allowlist)


def compressed(ip: IPAddress) -> str:
    """`ip.compressed`, from the address's integer in a fraction of ipaddress's time (it runs for every ban).

    The same text: tests/unit/test_plan_speed.py compares with ipaddress for both families."""
    if type(ip) is ipaddress.IPv4Address:
        n = int(ip)
        return "%d.%d.%d.%d" % (n >> 24, n >> 16 & 255, n >> 8 & 255, n & 255)  # noqa: UP031 - the fastest
    if type(ip) is ipaddress.IPv6Address and ip.scope_id is None:
        n = int(ip)
        if n >> 32 != 0xFFFF:  # an IPv4-mapped address: Python versions spell it differently, ask ipaddress
            return _v6_text(n)
    return ip.compressed


_V6_HEXTETS = ":%x:%x:%x:%x:%x:%x:%x:%x:"
# The longest run of zero hextets first; str.find gives the leftmost of equal runs, as ipaddress picks.
_ZERO_RUNS = tuple(":0" * length + ":" for length in range(8, 1, -1))


def _v6_text(n: int) -> str:
    """RFC 5952 text of an IPv6 address (ipaddress's `_compress_hextets`): the longest run of two or more
    zero hextets, the leftmost of equals, becomes `::`."""
    full = _V6_HEXTETS % (
        n >> 112, n >> 96 & 0xFFFF, n >> 80 & 0xFFFF, n >> 64 & 0xFFFF,
        n >> 48 & 0xFFFF, n >> 32 & 0xFFFF, n >> 16 & 0xFFFF, n & 0xFFFF,
    )  # fmt: skip
    if ":0:0:" in full:
        for run in _ZERO_RUNS:
            at = full.find(run)
            if at >= 0:
                return full[1:at] + "::" + full[at + len(run) : -1]
    return full[1:-1]
