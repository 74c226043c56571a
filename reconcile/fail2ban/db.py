"""fail2ban's own sqlite database, read as a witness: the bans it holds as current. Read-only, short.

fail2ban writes this file while it runs. A read transaction held open makes its writes fail and the ban
is lost from the database (fail2ban-facts.md §8), so: one SELECT, fetched at once, connection closed.
Never `immutable=1`: that would let sqlite skip the locks while fail2ban writes. Anything odd about the
file means no witness (None), never a failed run.
"""

from __future__ import annotations

import logging
import sqlite3
import urllib.parse

from reconcile.fail2ban.restore import DbBan, db_ban

log = logging.getLogger("reconcile.fail2ban")

# What fail2ban's restore asks for (database.py _getCurrentBans), for every jail at once; the per-jail
# rules it applies on top (younger than bantime, clipped) are bans.will_restore.
_CURRENT = "SELECT jail, ip, timeofban, bantime FROM bips WHERE timeofban + bantime > ? OR bantime <= -1"
# fail2ban's busy timeout is 5 s: waiting 1 s for its write lock leaves it room, and then we give up.
_BUSY_TIMEOUT = 1.0


def current_bans(path: str, now: float) -> tuple[DbBan, ...] | None:
    """The bans the database at `path` holds as current at `now` (epoch seconds); None if unusable."""
    uri = "file:" + urllib.parse.quote(path) + "?mode=ro"
    try:
        connection = sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT, isolation_level=None)
    except (sqlite3.Error, OSError) as exc:
        log.debug("fail2ban database %s not readable (%s)", path, exc)
        return None
    try:
        rows = connection.execute(_CURRENT, (int(now),)).fetchall()
    except sqlite3.Error as exc:
        log.debug("fail2ban database %s not usable (%s)", path, exc)
        return None
    finally:
        connection.close()  # at once: fail2ban must not find its database locked
    bans, odd = [], 0
    for row in rows:
        jail, ip, timeofban, bantime = row
        if (
            isinstance(jail, str)
            and isinstance(ip, str)
            and ip
            and type(timeofban) is int
            and type(bantime) is int
        ):
            bans.append(db_ban(jail, ip, timeofban, bantime))
        else:
            odd += 1
    if odd:
        log.debug("fail2ban database %s: %d odd row(s) in bips ignored", path, odd)
    log.debug("fail2ban database %s: %d current ban(s)", path, len(bans))
    return tuple(bans)
