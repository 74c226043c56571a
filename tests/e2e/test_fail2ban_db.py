"""fail2ban's database as a witness: the pure restore and zone decisions, and reading a real sqlite file."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from reconcile.fail2ban.db import current_bans
from reconcile.fail2ban.parse import parse_dbfile, parse_jail_times
from reconcile.fail2ban.restore import DbBan, JailTimes, will_restore
from tests.support.f2b_server import F2B, JAILS, running_f2b

HOUR = 3600


# --- get dbfile ---------------------------------------------------------------------------------------------


@pytest.mark.fail2ban
@pytest.mark.parametrize(
    ("dbfile", "printed"),
    [
        (None, "Current database file is:\n`- {path}\n"),
        ("None", "Database currently disabled\n"),
        (":memory:", "Current database file is:\n`- :memory:\n"),
    ],
)
def test_get_dbfile_as_fail2ban_prints_it(dbfile: str | None, printed: str) -> None:
    with running_f2b(dbfile=dbfile) as srv:
        out = srv.client("get", "dbfile").stdout
        path = srv.run / "fail2ban.sqlite3"
    assert out == printed.format(path=path)
    assert parse_dbfile(out) == (str(path) if dbfile is None else None)  # in memory: not ours to read


# --- what fail2ban will restore -----------------------------------------------------------------------------


@pytest.mark.fail2ban
def test_will_restore_agrees_with_fail2ban_s_own_restore() -> None:
    """Rows written into a stopped server's database; what it restores is what will_restore says."""
    now = int(time.time())
    cases = [  # (jail, ip, seconds ago, bantime)
        ("sshd", "45.155.205.1", 60, HOUR),
        ("sshd", "45.155.205.2", HOUR + 120, 3 * HOUR),  # older than sshd's bantime
        ("sshd", "45.155.205.3", 60, -1),  # permanent in a 1 h jail: clipped, running
        ("sshd", "45.155.205.4", 2 * HOUR, -1),  # clipped and ended
        ("sshd", "45.155.205.5", 60, -2),
        ("manual", "45.155.205.6", 400 * 86400, -1),
        ("manual", "45.155.205.7", 2 * HOUR, HOUR),
        ("nginx-http-auth", "45.155.205.8", 5 * HOUR, 8 * HOUR),  # increment: not clipped
        ("nginx-http-auth", "45.155.205.9", 5 * HOUR, 4 * HOUR),  # ended
        ("recidive", "45.155.205.10", 8 * 86400, 30 * 86400),  # older than recidive's week
        ("recidive", "45.155.205.11", 6 * 86400, 30 * 86400),
    ]
    with running_f2b() as srv:
        times = {jail: jail_times(srv, jail) for jail in JAILS}
        srv.stop()
        with contextlib.closing(sqlite3.connect(srv.dbfile)) as db, db:
            db.executemany(
                "INSERT INTO bips(ip, jail, timeofban, bantime, bancount, data) VALUES (?, ?, ?, ?, 1, ?)",
                [
                    (ip, jail, now - ago, bantime, '{"matches": [], "failures": 0}')
                    for jail, ip, ago, bantime in cases
                ],
            )
        srv.start()
        expected = {
            (jail, ip)
            for jail, ip, ago, bantime in cases
            if will_restore(DbBan(jail, ip, now - ago, bantime), times[jail], time.time())
        }
        assert len(expected) == 6
        restored = wait_stable(srv)
    assert restored == expected


def jail_times(srv: F2B, jail: str) -> JailTimes:
    answers = [
        srv.client("get", jail, prop).stdout for prop in ("bantime", "bantime.increment", "bantime.maxtime")
    ]
    return parse_jail_times(*answers)


def wait_stable(srv: F2B) -> set[tuple[str, str]]:
    """The bans the server shows once the restore has settled (the same answer for 1 s)."""
    last: set[tuple[str, str]] | None = None
    since = time.monotonic()
    deadline = since + 15
    while time.monotonic() < deadline:
        now = {(jail, ip) for jail, ips in srv.banned().items() for ip in ips}
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > 1.0:
            return now
        time.sleep(0.1)
    raise AssertionError(f"restore did not settle: {last}")


# --- the time zone check ------------------------------------------------------------------------------------


def printed(zone: ZoneInfo, epoch: int, seconds: int) -> str:
    """A `--with-time` line as a server in `zone` prints it."""
    start = datetime.fromtimestamp(epoch, zone)
    end = datetime.fromtimestamp(epoch + seconds, zone)
    return f"{start:%Y-%m-%d %H:%M:%S} + {seconds} = {end:%Y-%m-%d %H:%M:%S}"


# --- reading the file ---------------------------------------------------------------------------------------


@pytest.mark.fail2ban
def test_the_real_server_s_database(f2b: F2B) -> None:
    f2b.ban("sshd", "45.155.205.1")
    f2b.ban("manual", "45.155.205.2")
    path = parse_dbfile(f2b.client("get", "dbfile").stdout)
    assert path == f2b.dbfile
    stored = current_bans(path, time.time())
    assert stored is not None
    assert {(b.jail, b.value, b.bantime) for b in stored} == {
        ("sshd", "45.155.205.1", HOUR),
        ("manual", "45.155.205.2", -1),
    }
    # fail2ban still writes after our read (facts §8: a held read made it lose writes)
    f2b.ban("sshd", "45.155.205.3")
    deadline = time.monotonic() + 5
    while True:  # the row lands within milliseconds of the ban (facts §8)
        again = current_bans(path, time.time())
        assert again is not None
        if ("sshd", "45.155.205.3") in {(b.jail, b.value) for b in again} or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert ("sshd", "45.155.205.3") in {(b.jail, b.value) for b in again}
