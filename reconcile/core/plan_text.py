"""Texts and jail lists the planner makes once per host set or jail list, not once per ban (issue 18).

A fleet has a handful of jail lists and host sets; planning 100,000 bans made the same reason string and
the same sorted union for nearly every one of them. The unit tests compare each with its plain definition.
"""

from __future__ import annotations

import functools

from reconcile.core.sanitize import hosts_text


@functools.lru_cache(maxsize=1024)
def banned_in(jails: tuple[str, ...]) -> str:
    return f"banned in {', '.join(jails)}"


@functools.lru_cache(maxsize=1024)
def covered_reason(others: tuple[str, ...]) -> str:
    return f"shared with {hosts_text(others)}; the lease covers this host's ban"


@functools.lru_cache(maxsize=1024)
def joining(hosts: tuple[str, ...]) -> str:
    """`f"joining {owner}"` for the owner of a lease with these hosts (Owner.__str__: their hosts_text)."""
    return f"joining {hosts_text(hosts)}"


@functools.lru_cache(maxsize=1024)
def jail_union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted({*a, *b}))


@functools.lru_cache(maxsize=1024)
def others_than(hosts: tuple[str, ...], me: str) -> tuple[str, ...]:
    """The hosts of a set other than this one (a handful of sets: not a generator per listed rule)."""
    return tuple(h for h in hosts if h != me)
