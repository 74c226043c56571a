"""fail2ban still restoring is not "unbanned" (DESIGN §6): which stored bans the server will restore, and
which it does not show yet.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from reconcile.core.merge import address_of


@dataclass(frozen=True)
class DbBan:
    """One row of fail2ban's `bips` table: the latest ban of `value` in `jail`, as fail2ban stored it.

    `timeofban` is epoch seconds; `bantime` seconds, -1 permanent (-2: unknown, from an old schema).
    """

    jail: str
    value: str
    timeofban: int
    bantime: int


def db_ban(jail: str, value: str, timeofban: int, bantime: int) -> DbBan:
    """`DbBan(...)` without the frozen dataclass's __init__ (a setattr per field): one per stored ban,
    40,000 for a 40,000-ban report. Equal to it: tests/unit/test_plan_speed.py compares."""
    made = object.__new__(DbBan)
    fields = {"jail": jail, "value": value, "timeofban": timeofban, "bantime": bantime}
    object.__setattr__(made, "__dict__", fields)
    return made


@dataclass(frozen=True)
class JailTimes:
    """A jail's current ban times, which fail2ban's restore clips stored bans with (jail.py)."""

    bantime: int  # `get JAIL bantime`; -1 permanent
    increment: bool  # `get JAIL bantime.increment`
    maxtime: int | None  # `get JAIL bantime.maxtime`; None when unset


def not_shown(
    stored: Iterable[DbBan], shown: Collection[tuple[str, str]], jails: Collection[str]
) -> list[DbBan]:
    """Stored bans of the server's `jails` that the server does not show: (jail, value) pairs.

    Values that are no address are left out: they never become a rule, so nothing waits for them.
    A jail the server does not have restores nothing.
    """
    return [
        b
        for b in stored
        if b.jail in jails and (b.jail, b.value) not in shown and address_of(b.value) is not None
    ]


def will_restore(ban: DbBan, jail: JailTimes, now: float) -> bool:
    """Whether fail2ban, (re)starting at `now`, restores `ban` (database.py getCurrentBans and
    jail.py restoreCurrentBans of fail2ban 1.0, step by step).

    Without bantime.increment only bans younger than the jail's bantime are looked at, and every ban
    (a permanent one too) is clipped to that bantime; with it, to bantime.maxtime when set. A ban whose
    clipped end has passed is not restored.
    """
    if jail.increment:
        forbantime = None
        clip = jail.maxtime if jail.maxtime is not None else -1
    else:
        forbantime = jail.bantime
        clip = jail.bantime
    bantime, timeofban = ban.bantime, ban.timeofban
    # the query: current by the stored time, and (without increment) banned within the jail's bantime
    if not (timeofban + bantime > now or bantime <= -1):
        return False
    if forbantime not in (None, -1) and not timeofban > now - forbantime:
        return False
    if bantime == -2:  # unknown after a schema upgrade: the jail's bantime
        bantime = jail.bantime
    elif clip > 0 and (bantime == -1 or bantime > clip):
        bantime = clip
    return bantime == -1 or timeofban + bantime > now
