"""fail2ban's database as a witness: pure restore and time zone decisions, and reading a real sqlite file."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from reconcile.core.model import BanEntry
from reconcile.fail2ban.db import current_bans
from reconcile.fail2ban.parse import parse_banip_with_time, parse_dbfile, parse_jail_times
from reconcile.fail2ban.restore import DbBan, JailTimes, not_shown, will_restore
from reconcile.fail2ban.timezone import check_timezone, format_offset

NOW = 1_795_236_681  # 2026-11-21 04:51:21 UTC
HOUR = 3600

# fail2ban 1.0.2's schema (fail2ban-facts.md §8), the tables a witness reads
SCHEMA = """
CREATE TABLE fail2banDb(version INTEGER);
CREATE TABLE jails(name TEXT NOT NULL UNIQUE, enabled INTEGER NOT NULL DEFAULT 1);
CREATE TABLE bans(jail TEXT NOT NULL, ip TEXT, timeofban INTEGER NOT NULL, bantime INTEGER NOT NULL,
  bancount INTEGER NOT NULL default 1, data JSON, FOREIGN KEY(jail) REFERENCES jails(name) );
CREATE TABLE bips(ip TEXT NOT NULL, jail TEXT NOT NULL, timeofban INTEGER NOT NULL, bantime INTEGER NOT NULL,
  bancount INTEGER NOT NULL default 1, data JSON, PRIMARY KEY(ip, jail),
  FOREIGN KEY(jail) REFERENCES jails(name) );
CREATE INDEX bips_timeofban ON bips(timeofban);
CREATE INDEX bips_ip ON bips(ip);
INSERT INTO fail2banDb(version) VALUES (4);
"""


# --- get dbfile ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("junk", ["", "Current database file is:\n", "pong\n", "Current database file is: x"])
def test_unexpected_dbfile_answer(junk: str) -> None:
    with pytest.raises(ValueError, match="Current database file is"):
        parse_dbfile(junk)


def test_jail_times_as_fail2ban_prints_them() -> None:
    # `get JAIL bantime`, `bantime.increment`, `bantime.maxtime` of the fixture's jails (unset: None)
    assert parse_jail_times("3600\n", "None\n", "None\n") == JailTimes(3600, False, None)
    assert parse_jail_times("600\n", "True\n", "604800\n") == JailTimes(600, True, 604800)
    assert parse_jail_times("-1\n", "False\n", "None\n") == JailTimes(-1, False, None)
    with pytest.raises(ValueError, match=r"bantime\.increment"):
        parse_jail_times("600\n", "yes\n", "None\n")
    with pytest.raises(ValueError, match="whole seconds"):
        parse_jail_times("1h\n", "None\n", "None\n")


# --- what fail2ban will restore -----------------------------------------------------------------------------

PLAIN = JailTimes(HOUR, False, None)  # sshd: bantime 1 h
PERMANENT_JAIL = JailTimes(-1, False, None)  # manual
INCREMENT = JailTimes(600, True, None)  # nginx-http-auth, no maxtime
INCREMENT_CAPPED = JailTimes(600, True, 2 * HOUR)


@pytest.mark.parametrize(
    ("jail", "timeofban", "bantime", "restored"),
    [
        (PLAIN, NOW - 60, HOUR, True),
        (PLAIN, NOW - HOUR - 1, 2 * HOUR, False),  # older than the jail's bantime: not looked at
        (PLAIN, NOW - 60, 2 * HOUR, True),  # clipped to 1 h, still running
        (PLAIN, NOW - 60, -1, True),  # a permanent ban in a 1 h jail: clipped, still running
        (PLAIN, NOW - 2 * HOUR, -1, False),  # ... and ended
        (PLAIN, NOW - 60, 30, False),  # ended by its own time
        (PLAIN, NOW - 60, -2, True),  # unknown (old schema): the jail's bantime
        (PERMANENT_JAIL, NOW - 400 * 86400, -1, True),
        (PERMANENT_JAIL, NOW - 400 * 86400, 500 * 86400, True),  # never clipped
        (PERMANENT_JAIL, NOW - 2 * HOUR, HOUR, False),
        (INCREMENT, NOW - 5 * HOUR, 8 * HOUR, True),  # an increased ban, no maxtime: not clipped
        (INCREMENT, NOW - 5 * HOUR, -1, True),
        (INCREMENT_CAPPED, NOW - 5 * HOUR, 8 * HOUR, False),  # clipped to maxtime 2 h: ended
        (INCREMENT_CAPPED, NOW - HOUR, -1, True),  # clipped to 2 h, still running
        (INCREMENT_CAPPED, NOW - 3 * HOUR, -1, False),
    ],
)
def test_will_restore(jail: JailTimes, timeofban: int, bantime: int, restored: bool) -> None:
    assert will_restore(DbBan("j", "45.155.205.1", timeofban, bantime), jail, NOW) is restored


def test_not_shown_leaves_out_shown_bans_other_jails_and_non_addresses() -> None:
    stored = [
        DbBan("sshd", "45.155.205.1", NOW, HOUR),
        DbBan("sshd", "45.155.205.2", NOW, HOUR),
        DbBan("gone", "45.155.205.3", NOW, HOUR),  # a jail the server does not have
        DbBan("sshd", "not_an_ip", NOW, HOUR),  # never a rule: nothing to wait for
        DbBan("recidive", "45.155.205.1", NOW, HOUR),  # shown in sshd, not in recidive
    ]
    shown = {("sshd", "45.155.205.1")}
    assert not_shown(stored, shown, ["sshd", "recidive"]) == [stored[1], stored[4]]
    assert not_shown(stored, shown, ["sshd"]) == [stored[1]]


# --- the time zone check ------------------------------------------------------------------------------------

LA = ZoneInfo("America/Los_Angeles")


def printed(tz: ZoneInfo, epoch: int, seconds: int) -> str:
    """A `--with-time` line as a server in time zone `tz` prints it."""
    start = datetime.fromtimestamp(epoch, tz)
    end = datetime.fromtimestamp(epoch + seconds, tz)
    return f"{start:%Y-%m-%d %H:%M:%S} + {seconds} = {end:%Y-%m-%d %H:%M:%S}"


def read_as(tz: tzinfo, lines: list[tuple[str, int, int]]) -> list[BanEntry]:
    """Server in LA; the entries as a reader assuming time zone `tz` parses them."""
    text = "\n".join(f"{ip} \t{printed(LA, epoch, seconds)}" for ip, epoch, seconds in lines)
    return parse_banip_with_time("sshd", text, tz)


def test_a_consistent_offset_takes_the_database_s_times() -> None:
    lines = [("45.155.205.1", NOW - 60, HOUR), ("45.155.205.2", NOW - 120, HOUR)]
    entries = read_as(UTC, lines)
    assert entries[0].end is not None and entries[0].end < datetime.fromtimestamp(NOW, UTC)  # read as ended
    stored = [DbBan("sshd", ip, epoch, seconds) for ip, epoch, seconds in lines]
    check = check_timezone(entries, stored, UTC)
    assert check.misread == 2 and check.compared == 2
    assert [format_offset(o) for o in check.offsets] == ["UTC-08:00"]  # November: Pacific standard time
    assert [(e.start, e.end) for e in check.entries] == [
        (datetime.fromtimestamp(epoch, UTC), datetime.fromtimestamp(epoch + seconds, UTC))
        for _, epoch, seconds in lines
    ]


def test_a_misread_start_is_read_again_as_fail2ban_s_timezone_would_not_rounded_like_the_row() -> None:
    # the row's epoch is rounded up (a ban at .6 s), the print truncated: the reading in fail2ban's own
    # time zone wins, so a rule written by a run with [fail2ban] timezone set is not renewed by one without
    [wrong] = read_as(UTC, [("45.155.205.1", NOW, HOUR)])
    [right] = read_as(LA, [("45.155.205.1", NOW, HOUR)])
    check = check_timezone([wrong], [DbBan("sshd", "45.155.205.1", NOW + 1, HOUR)], UTC)
    assert check.misread == 1
    assert list(check.entries) == [right]


def test_an_entry_without_a_row_is_read_with_the_offset_found() -> None:
    lines = [("45.155.205.1", NOW - 60, HOUR), ("45.155.205.2", NOW - 30, HOUR)]
    entries = read_as(UTC, lines)
    check = check_timezone(entries, [DbBan("sshd", "45.155.205.1", NOW - 60, HOUR)], UTC)
    assert check.misread == 1
    assert check.entries[1].start == datetime.fromtimestamp(NOW - 30, UTC)
    assert check.entries[1].end == datetime.fromtimestamp(NOW - 30 + HOUR, UTC)


def test_the_right_timezone_changes_nothing() -> None:
    lines = [("45.155.205.1", NOW - 60, HOUR), ("45.155.205.2", NOW - 60, -1)]
    entries = read_as(LA, lines)
    check = check_timezone(entries, [DbBan("sshd", ip, e, s) for ip, e, s in lines], LA)
    assert check.misread == 0 and check.offsets == () and check.compared == 2
    assert list(check.entries) == entries


def test_a_live_ban_s_truncated_start_is_not_a_timezone_error() -> None:
    # a live ban prints its start truncated, the database rounds it: a second apart
    [entry] = read_as(LA, [("45.155.205.1", NOW, HOUR)])
    check = check_timezone([entry], [DbBan("sshd", "45.155.205.1", NOW + 1, HOUR)], LA)
    assert check.misread == 0 and list(check.entries) == [entry]


def test_a_difference_that_is_no_timezone_offset_is_left_alone() -> None:
    # e.g. a ban newer than its row (a lost database write): not the time zone's doing
    [entry] = read_as(LA, [("45.155.205.1", NOW, HOUR)])
    check = check_timezone([entry], [DbBan("sshd", "45.155.205.1", NOW - 1234, HOUR)], LA)
    assert check.misread == 0 and list(check.entries) == [entry]


def test_format_offset() -> None:
    assert format_offset(timedelta(hours=-8)) == "UTC-08:00"
    assert format_offset(timedelta(hours=5, minutes=30)) == "UTC+05:30"
    assert format_offset(timedelta(0)) == "UTC"


# --- reading the file ---------------------------------------------------------------------------------------


def make_db(path: Path, rows: list[tuple[object, ...]]) -> Path:
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executescript(SCHEMA)
        db.executemany("INSERT INTO bips(ip, jail, timeofban, bantime, data) VALUES (?, ?, ?, ?, '{}')", rows)
    return path


def test_current_bans_like_fail2ban_s_query(tmp_path: Path) -> None:
    path = make_db(
        tmp_path / "fail2ban.sqlite3",
        [
            ("45.155.205.1", "sshd", NOW - 60, HOUR),
            ("45.155.205.2", "sshd", NOW - 2 * HOUR, HOUR),  # ended: not current
            ("45.155.205.3", "manual", NOW - 400 * 86400, -1),
            ("45.155.205.4", "sshd", NOW - 60, -2),
        ],
    )
    assert current_bans(str(path), NOW) == (
        DbBan("sshd", "45.155.205.1", NOW - 60, HOUR),
        DbBan("manual", "45.155.205.3", NOW - 400 * 86400, -1),
        DbBan("sshd", "45.155.205.4", NOW - 60, -2),
    )


def test_odd_rows_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="reconcile.fail2ban")
    path = make_db(
        tmp_path / "fail2ban.sqlite3",
        [("45.155.205.1", "sshd", NOW, HOUR), ("", "sshd", NOW, HOUR), ("45.155.205.2", "sshd", "soon", -1)],
    )
    assert current_bans(str(path), NOW) == (DbBan("sshd", "45.155.205.1", NOW, HOUR),)
    assert "2 odd row(s) in bips ignored" in caplog.text


@pytest.mark.parametrize("kind", ["missing", "directory", "not sqlite", "no bips table", "empty file"])
def test_an_unusable_database_is_no_witness(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="reconcile.fail2ban")
    path = tmp_path / "fail2ban.sqlite3"
    if kind == "directory":
        path.mkdir()
    elif kind == "not sqlite":
        path.write_bytes(b"certainly not a database\n" * 100)
    elif kind == "no bips table":
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("CREATE TABLE other(x)")
    elif kind == "empty file":
        path.touch()
    assert current_bans(str(path), NOW) is None
    assert f"fail2ban database {path} not" in caplog.text
    assert not (tmp_path / "fail2ban.sqlite3-journal").exists()
    if kind == "missing":
        assert not path.exists()  # read-only: never created


def test_reading_leaves_no_lock_behind(tmp_path: Path) -> None:
    path = make_db(tmp_path / "fail2ban.sqlite3", [("45.155.205.1", "sshd", NOW, HOUR)])
    before = path.read_bytes()
    assert current_bans(str(path), NOW) is not None
    assert path.read_bytes() == before  # nothing written
    # fail2ban's next write gets the file at once (timeout 0): no read transaction is left open
    with contextlib.closing(sqlite3.connect(path, timeout=0, isolation_level=None)) as writer:
        writer.execute("BEGIN EXCLUSIVE")
        writer.execute("INSERT INTO bips(ip, jail, timeofban, bantime) VALUES ('45.155.205.2', 'sshd', 1, 1)")
        writer.execute("COMMIT")


def test_a_path_that_needs_quoting_in_a_uri(tmp_path: Path) -> None:
    path = make_db(tmp_path / "odd ?name#%.sqlite3", [("45.155.205.1", "sshd", NOW, HOUR)])
    assert current_bans(str(path), NOW) == (DbBan("sshd", "45.155.205.1", NOW, HOUR),)


def test_a_locked_database_is_given_up_on_not_waited_for_long(tmp_path: Path) -> None:
    path = make_db(tmp_path / "fail2ban.sqlite3", [("45.155.205.1", "sshd", NOW, HOUR)])
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as writer:
        writer.execute("BEGIN EXCLUSIVE")  # fail2ban in the middle of a write
        started = time.monotonic()
        assert current_bans(str(path), NOW) is None
        assert time.monotonic() - started < 3
        writer.execute("ROLLBACK")
