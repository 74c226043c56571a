"""fail2ban's state, read completely or not at all (DESIGN §2, §6): every jail's bans, waited for while the
server restores them, their times checked against the database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo

from dateutil import tz as dateutil_tz

from reconcile.config import Config
from reconcile.core.collector import collector_paused
from reconcile.core.model import BanEntry, Fail2banState
from reconcile.errors import Fail2banError
from reconcile.fail2ban import db
from reconcile.fail2ban.client import run_client
from reconcile.fail2ban.parse import parse_banip_with_time, parse_dbfile, parse_jail_list, parse_jail_times
from reconcile.fail2ban.restore import DbBan, JailTimes, not_shown, will_restore
from reconcile.fail2ban.timezone import check_timezone, format_offset

log = logging.getLogger("reconcile.fail2ban")

# After a (re)start fail2ban restores its bans asynchronously (fail2ban-facts §9): how long a run waits for
# the bans its database holds as current, and how often it looks again meanwhile (DESIGN §6).
RESTORE_WAIT = 10.0


RESTORE_POLL = 0.25


def timezone(name: str) -> tzinfo:
    """`[fail2ban] timezone`: an IANA time zone, or "" for this machine's."""
    return ZoneInfo(name) if name else dateutil_tz.tzlocal()


def read_configured(config: Config) -> Fail2banState:
    """Every ban of the configured jails, in fail2ban's time zone; any failure is a Fail2banError."""
    return read_state(
        config.fail2ban.command,
        config.fail2ban.jails,
        config.fail2ban.timeout,
        timezone(config.fail2ban.timezone),
    )


def read_state(
    command: Sequence[str],
    jails: Sequence[str],
    timeout: float,
    tz: tzinfo | None = None,
    *,
    restore_wait: float = RESTORE_WAIT,
    restore_poll: float = RESTORE_POLL,
) -> Fail2banState:
    """Every ban of every jail (or of the configured `jails`), with times converted from fail2ban's time zone.

    fail2ban's database, when readable, is a witness: bans it holds as current that the server does not
    show yet are waited for (up to `restore_wait` s), and its epochs check the time zone `tz`.
    """
    with collector_paused():
        return _read_state(command, jails, timeout, tz, restore_wait, restore_poll)


def _read_state(
    command: Sequence[str],
    jails: Sequence[str],
    timeout: float,
    tz: tzinfo | None,
    restore_wait: float,
    restore_poll: float,
) -> Fail2banState:
    timezone_ = tz if tz is not None else dateutil_tz.tzlocal()
    if jails:
        # Configured jails need not wait for `status` (one fail2ban-client start-up, 0.1 s of every run):
        # it runs alongside their reads, and its verdict still comes first (_read_jails).
        selected = tuple(dict.fromkeys(jails))
        by_jail, database, stored = _read_jails(command, selected, timeout, timezone_, configured=True)
    else:
        selected = _available(run_client(command, ["status"], timeout))
        by_jail, database, stored = _read_jails(command, selected, timeout, timezone_)
    # The database was read while the server answered (a tenth of a second of a 40,000-ban read, spent while
    # waiting). It is read again after the server, which then decides, when that reading was unusable (locked
    # by fail2ban's own write, say) or when the server lacks any stored ban: a ban lifted meanwhile would look
    # like one still to restore (a ban added in between is then in both).
    if database is not None and (stored is None or not_shown(stored, _shown(by_jail), by_jail)):
        stored = _stored_bans(database)
        if stored is None:  # said here: the early reading's failure alone decides nothing
            log.debug("fail2ban database %s unusable: no restore or time zone check", database)
        else:
            by_jail = _await_restore(command, timeout, timezone_, by_jail, stored, restore_wait, restore_poll)
    entries = [entry for jail in selected for entry in by_jail[jail]]
    if stored is not None:
        entries = _checked_timezone(entries, stored, timezone_)
    return Fail2banState(jails=selected, entries=tuple(entries))


# fail2ban-client calls at a time: each is mostly a Python start-up (~0.1 s) and a wait on the server's
# socket, so a few in parallel read 10 jails in about half the time; more would only crowd the CPU.
PARALLEL_CALLS = 4


def _available(status_output: str) -> tuple[str, ...]:
    """The jails `fail2ban-client status` names; a Fail2banError when it names none or cannot be read."""
    try:
        available = tuple(parse_jail_list(status_output))
    except ValueError as exc:
        raise Fail2banError(_unparseable(["status"], exc)) from None
    if not available:
        # A server with no jail at all is misconfigured (e.g. every jail failed to load), not a host with
        # nothing banned: believing its empty answer would expire every rule.
        raise Fail2banError(
            "fail2ban-client status: fail2ban reports no jails (is its jail configuration loaded?)"
        )
    return available


def _read_jails(
    command: Sequence[str], jails: Sequence[str], timeout: float, tz: tzinfo, *, configured: bool = False
) -> tuple[dict[str, list[BanEntry]], str | None, tuple[DbBan, ...] | None]:
    """Every jail's entries, fail2ban's database file and its current bans read meanwhile
    (`_dbfile_and_bans`): all or nothing.

    The calls run PARALLEL_CALLS at a time. The first failure in jail order is raised after the calls
    already running have ended (each is bounded by `timeout`); calls not yet started are not made.
    `configured`: `status` runs first among them, and its failure, or a jail it does not name, is the error
    (a missing jail's own read fails too, less clearly).
    """
    with ThreadPoolExecutor(max_workers=PARALLEL_CALLS, thread_name_prefix="fail2ban-client") as pool:
        status = pool.submit(run_client, command, ["status"], timeout) if configured else None
        futures = {jail: pool.submit(_read_jail, command, jail, timeout, tz) for jail in jails}
        dbfile = pool.submit(_dbfile_and_bans, command, timeout)
        try:
            if status is not None:
                available = _available(status.result())
                missing = [j for j in jails if j not in available]
                if missing:
                    raise Fail2banError(
                        f"configured jail(s) not in fail2ban: {', '.join(missing)}"
                        f" (fail2ban has: {', '.join(available)})"
                    )
            by_jail = {jail: future.result() for jail, future in futures.items()}
            return (by_jail, *dbfile.result())
        except BaseException:
            for future in futures.values():
                future.cancel()
            dbfile.cancel()
            raise


def _read_jail(command: Sequence[str], jail: str, timeout: float, tz: tzinfo) -> list[BanEntry]:
    args = ["get", jail, "banip", "--with-time"]
    output = run_client(command, args, timeout)
    try:
        return parse_banip_with_time(jail, output, tz)
    except ValueError as exc:
        raise Fail2banError(_unparseable(args, exc)) from None


def _dbfile_and_bans(command: Sequence[str], timeout: float) -> tuple[str | None, tuple[DbBan, ...] | None]:
    """fail2ban's database (`get dbfile`; None: none to read) and its current bans (None: unusable)."""
    database = _database(run_client(command, ["get", "dbfile"], timeout))
    return database, None if database is None else _stored_bans(database)


def _database(dbfile_output: str) -> str | None:
    """The database file `get dbfile` names; None (and a debug line) when there is no usable one."""
    try:
        path = parse_dbfile(dbfile_output)
    except ValueError as exc:
        log.debug("%s: no restore or time zone check", _unparseable(["get", "dbfile"], exc))
        return None
    if path is None:
        log.debug("fail2ban keeps no database file: no restore or time zone check")
    return path


def _stored_bans(path: str) -> tuple[DbBan, ...] | None:
    """The current bans of fail2ban's database at `path`; None when it cannot be read now."""
    return db.current_bans(path, time.time())


def _await_restore(
    command: Sequence[str],
    timeout: float,
    tz: tzinfo,
    by_jail: dict[str, list[BanEntry]],
    stored: tuple[DbBan, ...],
    wait: float,
    poll: float,
) -> dict[str, list[BanEntry]]:
    """Re-read the jails whose stored bans the server does not show yet, until it does or `wait` is over.

    Only bans fail2ban will restore are waited for (bans.will_restore). Every re-read replaces that jail's
    entries; a failed one fails the run as any read does. What is still missing at the end is not banned.
    """
    started = time.monotonic()
    missing = not_shown(stored, _shown(by_jail), by_jail)
    if not missing:
        return by_jail
    times = {jail: _jail_times(command, jail, timeout) for jail in sorted({b.jail for b in missing})}

    def awaited() -> list[DbBan]:
        now = time.time()
        pending = not_shown(stored, _shown(by_jail), by_jail)
        return [b for b in pending if b.jail in times and will_restore(b, times[b.jail], now)]

    pending = awaited()
    if not pending:
        log.debug(
            "fail2ban database: %d stored ban(s) not shown that fail2ban will not restore", len(missing)
        )
        return by_jail
    first = len(pending)
    log.info("fail2ban is restoring bans: %d stored ban(s) not shown yet, waiting up to %g s", first, wait)
    by_jail = dict(by_jail)
    while pending and time.monotonic() - started < wait:
        time.sleep(min(poll, max(0.0, wait - (time.monotonic() - started))))
        for jail in sorted({b.jail for b in pending}):
            by_jail[jail] = _read_jail(command, jail, timeout, tz)
        pending = awaited()
    waited = time.monotonic() - started
    if pending:
        log.warning(
            "fail2ban has not restored %d of %d stored ban(s) after %.1f s: treating them as not banned",
            len(pending),
            first,
            waited,
        )
    else:
        log.info("fail2ban restored the %d stored ban(s) in %.1f s", first, waited)
    return by_jail


def _shown(by_jail: dict[str, list[BanEntry]]) -> set[tuple[str, str]]:
    return {(e.jail, e.value) for entries in by_jail.values() for e in entries}


def _jail_times(command: Sequence[str], jail: str, timeout: float) -> JailTimes:
    answers = [run_client(command, ["get", jail, prop], timeout) for prop in _TIME_PROPERTIES]
    try:
        return parse_jail_times(*answers)
    except ValueError as exc:
        raise Fail2banError(_unparseable(["get", jail, "bantime"], exc)) from None


_TIME_PROPERTIES = ("bantime", "bantime.increment", "bantime.maxtime")


def _checked_timezone(entries: list[BanEntry], stored: tuple[DbBan, ...], tz: tzinfo) -> list[BanEntry]:
    check = check_timezone(entries, stored, tz)
    if check.misread:
        implied = " or ".join(format_offset(o) for o in check.offsets)
        log.warning(
            "fail2ban's times are not in %s: its database implies %s (%d of %d compared bans);"
            " using the database's times. Set [fail2ban] timezone to fail2ban-server's zone",
            _timezone_name(tz),
            implied,
            check.misread,
            check.compared,
        )
    return list(check.entries)


def _timezone_name(tz: tzinfo) -> str:
    if isinstance(tz, ZoneInfo):
        return f"[fail2ban] timezone {tz.key}"
    if isinstance(tz, dateutil_tz.tzlocal):
        return f"this machine's zone ({datetime.now(tz).tzname()})"
    return f"the zone {datetime.now(tz).tzname()}"


def _unparseable(args: Sequence[str], exc: ValueError) -> str:
    return f"unparseable output from fail2ban-client {' '.join(args)}: {exc}"


@dataclass(frozen=True)
class JailAction:
    """One action of a jail, with the commands fail2ban runs at a ban and an unban (for --check)."""

    jail: str
    name: str
    actionban: str | None  # None: not a command action (a Python action has no such property)
    actionunban: str | None


def read_actions(command: Sequence[str], jail: str, timeout: float) -> list[JailAction]:
    """The actions of `jail` (`get JAIL actions`, then each one's actionban/actionunban)."""
    output = run_client(command, ["get", jail, "actions"], timeout)
    lines = output.rstrip("\n").split("\n")
    if lines[0].startswith("No actions for jail"):
        return []
    if len(lines) != 2 or not lines[0].startswith("The jail "):
        raise Fail2banError(_unparseable(["get", jail, "actions"], ValueError(f"got {output[:200]!r}")))
    actions = []
    for name in (n.strip() for n in lines[1].split(",") if n.strip()):
        texts: list[str | None] = []
        for prop in ("actionban", "actionunban"):
            try:
                texts.append(run_client(command, ["get", jail, "action", name, prop], timeout).strip())
            except Fail2banError:
                texts.append(None)  # not a command action: nothing to read
        actions.append(JailAction(jail, name, texts[0], texts[1]))
    return actions
