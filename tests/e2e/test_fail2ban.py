"""reconcile.fail2ban against a real private fail2ban-server, and every way a call can fail."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from reconcile.core.merge import merge
from reconcile.core.model import BanEntry
from reconcile.errors import Fail2banError
from reconcile.fail2ban import state as state_module
from reconcile.fail2ban.client import run_client
from reconcile.fail2ban.state import read_state
from tests.support.f2b_server import F2B, JAILS, running_f2b

TIMEOUT = 30.0
WRAPPER = Path(__file__).resolve().parents[1] / "support" / "f2b_restore_wrapper.py"


def now() -> datetime:
    return datetime.now(UTC)


def by_key(entries: tuple[BanEntry, ...]) -> dict[tuple[str, str], BanEntry]:
    return {(e.jail, e.value): e for e in entries}


def fake_client(body: str) -> list[str]:
    """A command prefix running `body` as Python instead of fail2ban-client (argv[1:] = the client args)."""
    return [sys.executable, "-c", body]


def gone_or_zombie(pid: int) -> bool:
    # PID 1 here may not reap orphans, so a killed grandchild can linger as a zombie: it is dead all the same
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


# --- against the real server ------------------------------------------------------------------------------


@pytest.mark.fail2ban
def test_read_state_every_jail(f2b: F2B) -> None:
    before = now().replace(microsecond=0)
    f2b.ban("sshd", "203.0.113.5", "2001:DB8::1")
    f2b.ban("nginx-limit-req", "198.51.100.7", "2001:db8::2")
    f2b.ban("recidive", "203.0.113.5", "not_an_ip", "192.0.2.0/24")
    f2b.ban("manual", "198.18.0.1", "2001:db8:ffff::9")
    after = now()

    state = read_state(f2b.command, [], TIMEOUT)

    assert state.jails == JAILS
    entries = by_key(state.entries)
    assert set(entries) == {
        ("sshd", "203.0.113.5"),
        ("sshd", "2001:db8::1"),  # fail2ban normalises IPv6 itself
        ("nginx-limit-req", "198.51.100.7"),
        ("nginx-limit-req", "2001:db8::2"),
        ("recidive", "203.0.113.5"),
        ("recidive", "not_an_ip"),
        ("recidive", "192.0.2.0/24"),
        ("manual", "198.18.0.1"),
        ("manual", "2001:db8:ffff::9"),
    }
    length = {"sshd": 3600, "nginx-limit-req": 3600, "recidive": 604800}
    for (jail, _), e in entries.items():
        assert before <= e.start <= after
        assert e.start.utcoffset() == timedelta(0)
        if jail == "manual":
            assert e.end is None
        else:
            assert e.end == e.start + timedelta(seconds=length[jail])

    bans, invalid = merge(state.entries)
    assert sorted(e.value for e in invalid) == ["192.0.2.0/24", "not_an_ip"]
    merged = {str(b.ip): b for b in bans}
    assert list(merged) == [
        "198.18.0.1",
        "198.51.100.7",
        "203.0.113.5",
        "2001:db8::1",
        "2001:db8::2",
        "2001:db8:ffff::9",
    ]
    twice = merged["203.0.113.5"]
    assert twice.jails == ("recidive", "sshd")
    assert twice.until == entries["recidive", "203.0.113.5"].end  # the latest end wins
    assert merged["198.18.0.1"].until is None
    assert merged["198.18.0.1"].jails == ("manual",)


@pytest.mark.fail2ban
def test_permanent_ban_in_two_jails_stays_permanent(f2b: F2B) -> None:
    f2b.ban("sshd", "198.18.7.7")
    f2b.ban("manual", "198.18.7.7")
    [ban], invalid = merge(read_state(f2b.command, [], TIMEOUT).entries)
    assert invalid == []
    assert ban.jails == ("manual", "sshd")
    assert ban.until is None


@pytest.mark.fail2ban
def test_no_bans_is_an_empty_state(f2b: F2B) -> None:
    state = read_state(f2b.command, [], TIMEOUT)
    assert state.jails == JAILS
    assert state.entries == ()


@pytest.mark.fail2ban
def test_a_server_with_no_jails_is_an_error_not_an_empty_ban_list(f2b: F2B) -> None:
    f2b.ban("sshd", "45.155.205.1")
    for jail in JAILS:
        f2b.client("stop", jail)  # a real server whose jails are all gone, e.g. after a broken upgrade
    assert "Number of jail:\t0" in f2b.client("status").stdout
    with pytest.raises(Fail2banError, match="fail2ban reports no jails"):
        read_state(f2b.command, [], TIMEOUT)


@pytest.mark.fail2ban
def test_with_configured_jails_status_still_has_the_first_word(f2b: F2B) -> None:
    # Their reads run alongside `status` (one start-up less per run); its verdict is still the error.
    for jail in JAILS:
        f2b.client("stop", jail)
    with pytest.raises(Fail2banError, match="fail2ban reports no jails"):
        read_state(f2b.command, ["sshd"], TIMEOUT)


@pytest.mark.fail2ban
def test_configured_subset(f2b: F2B) -> None:
    f2b.ban("sshd", "198.18.0.2")
    f2b.ban("manual", "198.18.0.3")
    f2b.ban("recidive", "198.18.0.4")
    state = read_state(f2b.command, ["sshd", "manual", "sshd"], TIMEOUT)
    assert state.jails == ("sshd", "manual")
    assert sorted((e.jail, e.value) for e in state.entries) == [
        ("manual", "198.18.0.3"),
        ("sshd", "198.18.0.2"),
    ]


@pytest.mark.fail2ban
def test_unknown_configured_jail(f2b: F2B) -> None:
    with pytest.raises(Fail2banError, match=r"configured jail\(s\) not in fail2ban: nosuchjail.*sshd"):
        read_state(f2b.command, ["sshd", "nosuchjail"], TIMEOUT)


@pytest.mark.fail2ban
def test_jail_that_does_not_exist(f2b: F2B) -> None:
    with pytest.raises(
        Fail2banError, match=r"get nosuchjail banip --with-time: fail2ban jail 'nosuchjail' does not"
    ):
        run_client(f2b.command, ["get", "nosuchjail", "banip", "--with-time"], TIMEOUT)


@pytest.mark.fail2ban
def test_server_stopped(f2b: F2B) -> None:
    f2b.stop()
    assert not f2b.sock.exists()
    with pytest.raises(
        Fail2banError, match=r"^fail2ban is not running: fail2ban-client status: socket .* does not"
    ):
        read_state(f2b.command, [], TIMEOUT)


@pytest.mark.fail2ban
def test_stale_socket_after_kill_9(f2b: F2B) -> None:
    f2b.ban("sshd", "198.18.0.9")  # in the database too when it returns
    f2b.kill9()
    assert f2b.sock.exists()
    with pytest.raises(Fail2banError, match=r"^fail2ban is not running: .*connection refused \(stale socket"):
        read_state(f2b.command, [], TIMEOUT)
    # the fixture can bring the server back over the stale socket; the ban comes back from its database
    f2b.start()
    deadline = time.monotonic() + 30
    while not read_state(f2b.command, ["sshd"], TIMEOUT).entries and time.monotonic() < deadline:
        time.sleep(0.05)  # restore from the database is asynchronous (pitfall 6)
    assert [e.value for e in read_state(f2b.command, ["sshd"], TIMEOUT).entries] == ["198.18.0.9"]


@pytest.mark.fail2ban
@pytest.mark.skipif(
    os.geteuid() != 0, reason="switching to uid 65534 needs root (the server then runs as root)"
)
def test_permission_denied(f2b: F2B) -> None:
    # mkdtemp made the base 0700; open it so that "nobody" reaches the socket itself (srwx------ root) rather
    # than failing on the directory, which fail2ban-client reports as "not running"
    f2b.base.chmod(0o755)
    nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "fail2ban-client",
        "-s",
        str(f2b.sock),
    ]
    with pytest.raises(
        Fail2banError, match=r"permission denied on fail2ban's socket .*: run reconcile as root"
    ):
        read_state(nobody, [], TIMEOUT)
    # root through the same socket works: it is the user, not the path
    assert read_state(["fail2ban-client", "-s", str(f2b.sock)], [], TIMEOUT).jails == JAILS


@pytest.mark.fail2ban
def test_server_in_another_time_zone_without_a_database() -> None:
    # pitfall 4: the server prints wall time in its own zone; with no database to check, read_state must
    # be told that zone
    with running_f2b(server_env={"TZ": "Asia/Tokyo"}, dbfile="None") as srv:
        before = now().replace(microsecond=0)
        srv.ban("sshd", "198.18.0.5")
        after = now()
        [right] = read_state(srv.command, ["sshd"], TIMEOUT, tz=ZoneInfo("Asia/Tokyo")).entries
        [wrong] = read_state(srv.command, ["sshd"], TIMEOUT, tz=UTC).entries
    assert before <= right.start <= after
    assert right.end == right.start + timedelta(hours=1)
    assert wrong.start - right.start == timedelta(hours=9)


@pytest.mark.fail2ban
def test_server_in_another_time_zone_is_detected_from_its_database(caplog: pytest.LogCaptureFixture) -> None:
    with running_f2b(server_env={"TZ": "America/Los_Angeles"}) as srv:
        srv.ban("sshd", "45.155.205.5", "45.155.205.6")
        right = read_state(srv.command, ["sshd"], TIMEOUT, tz=ZoneInfo("America/Los_Angeles")).entries
        assert "not in" not in caplog.text
        detected = read_state(srv.command, ["sshd"], TIMEOUT, tz=UTC).entries
    assert detected == right  # not 8 hours early: the 1 h bans are live
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert re.fullmatch(
        r"fail2ban's times are not in the zone UTC: its database implies UTC-0[78]:00"
        r" \(2 of 2 compared bans\); using the database's times\."
        r" Set \[fail2ban\] timezone to fail2ban-server's zone",
        warning.getMessage(),
    )


# --- the restore witness ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.fail2ban
def test_a_read_right_after_a_restart_has_every_ban(f2b: F2B, caplog: pytest.LogCaptureFixture) -> None:
    # a real restart: with 7,000 bans the read usually lands mid-restore (the hiding wrapper below makes
    # that window deterministic); whichever it hits, every ban is read
    caplog.set_level(logging.INFO, logger="reconcile.fail2ban")
    ips = [f"45.{i // 250}.{i % 250}.1" for i in range(6000)]
    f2b.ban("sshd", *ips)
    f2b.ban("recidive", *ips[:1000])
    f2b.stop()
    f2b.start()  # returns once `status` shows the jails: the restore is still under way
    started = time.monotonic()
    # restore_wait: room for a slow restore on a loaded machine (the product's 10 s is not under test)
    state = read_state(f2b.command, [], TIMEOUT, restore_wait=60)
    took = time.monotonic() - started
    shown = {(e.jail, e.value) for e in state.entries}
    assert shown == {("sshd", ip) for ip in ips} | {("recidive", ip) for ip in ips[:1000]}
    assert "not restored" not in caplog.text
    print(
        "restore wait:",
        [r.getMessage() for r in caplog.records if "restor" in r.getMessage()],
        f"{took:.2f} s",
    )


class SteppedClock:
    """`time` for reconcile.fail2ban.state: its monotonic clock moves only when it sleeps (time() is real).

    The restore wait then polls the same number of times however long each fail2ban-client call takes on
    a loaded machine (a 1.5 s wait once fitted a single re-read).
    """

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds

    @staticmethod
    def time() -> float:
        return time.time()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SteppedClock:
    stepped = SteppedClock()
    monkeypatch.setattr(state_module, "time", stepped)
    return stepped


def hiding(srv: F2B, tmp_path: Path, hide: list[str], calls: int) -> tuple[list[str], Path]:
    """tests/f2b_restore_wrapper.py as the command: `hide` left out of each jail's first `calls` listings."""
    control = tmp_path / "restore.json"
    control.write_text(json.dumps({"command": srv.command, "hide": hide, "calls": calls, "seen": {}}))
    return [sys.executable, str(WRAPPER), str(control)], control


@pytest.mark.fail2ban
def test_hidden_bans_are_waited_for_until_shown(
    f2b: F2B, tmp_path: Path, caplog: pytest.LogCaptureFixture, clock: SteppedClock
) -> None:
    caplog.set_level(logging.INFO, logger="reconcile.fail2ban")
    f2b.ban("sshd", "45.155.205.1", "45.155.205.2", "45.155.205.3")
    command, control = hiding(f2b, tmp_path, ["45.155.205.2", "45.155.205.3"], calls=2)
    state = read_state(command, ["sshd"], TIMEOUT)
    assert sorted(e.value for e in state.entries) == ["45.155.205.1", "45.155.205.2", "45.155.205.3"]
    assert json.loads(control.read_text())["seen"] == {"sshd": 3}
    assert "fail2ban is restoring bans: 2 stored ban(s) not shown yet, waiting up to 10 s" in caplog.text
    assert "fail2ban restored the 2 stored ban(s) in 0.5 s" in caplog.text  # two polls of 0.25 s
    assert clock.now == 0.5


@pytest.mark.fail2ban
def test_bans_still_hidden_after_the_wait_are_not_banned(
    f2b: F2B, tmp_path: Path, caplog: pytest.LogCaptureFixture, clock: SteppedClock
) -> None:
    f2b.ban("sshd", "45.155.205.1", "45.155.205.2")
    f2b.ban("manual", "45.155.205.9")
    command, control = hiding(f2b, tmp_path, ["45.155.205.2", "45.155.205.9"], calls=10**6)
    state = read_state(command, [], TIMEOUT, restore_wait=1.5, restore_poll=0.2)
    assert sorted(e.value for e in state.entries) == ["45.155.205.1"]  # the rest of the read is kept
    assert clock.now == pytest.approx(1.5)  # the whole wait, and not longer
    seen = json.loads(control.read_text())["seen"]
    # the first read, then one re-read per 0.2 s poll of the 1.5 s wait (8, the last one 0.1 s)
    assert seen["sshd"] == seen["manual"] == 9 and seen["recidive"] == 1  # only those re-read
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert re.fullmatch(
        r"fail2ban has not restored 2 of 2 stored ban\(s\) after 1\.\d s: treating them as not banned",
        warning.getMessage(),
    )


@pytest.mark.fail2ban
def test_without_a_database_nothing_is_waited_for(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="reconcile.fail2ban")
    with running_f2b(dbfile="None") as srv:
        srv.ban("sshd", "45.155.205.1", "45.155.205.2")
        command, _ = hiding(srv, tmp_path, ["45.155.205.2"], calls=10**6)
        state = read_state(command, ["sshd"], TIMEOUT, restore_wait=30)
    assert [e.value for e in state.entries] == ["45.155.205.1"]  # as before the witness existed
    assert "fail2ban keeps no database file: no restore or time zone check" in caplog.text


def scripted_client(tmp_path: Path, db: Path | None, failing_reread: bool = False) -> list[str]:
    """A fake fail2ban-client: one jail, sshd, with 45.155.205.1 shown; `get dbfile` names `db`."""
    calls = tmp_path / "calls"
    calls.write_text("0")
    dbfile = "Database currently disabled" if db is None else f"Current database file is:\n`- {db}"
    body = (
        "import pathlib, sys\n"
        f"calls = pathlib.Path({str(calls)!r})\n"
        "args = sys.argv[1:]\n"
        "if args == ['status']:\n"
        "    print('Status\\n|- Number of jail:\\t1\\n`- Jail list:\\tsshd')\n"
        "elif args == ['get', 'dbfile']:\n"
        f"    print({dbfile!r})\n"
        "elif args[2:] == ['banip', '--with-time']:\n"
        "    n = int(calls.read_text()) + 1\n"
        "    calls.write_text(str(n))\n"
        f"    if n > 1 and {failing_reread!r}:\n"
        "        print('Sorry but the jail \\'sshd\\' does not exist'); sys.exit(255)\n"
        "    print('45.155.205.1 \\t2026-11-21 04:47:38 + -1 = 9999-12-31 23:59:59')\n"
        "elif args[2] == 'bantime':\n"
        "    print(-1)\n"
        "else:\n"
        "    print('None')\n"
    )
    return fake_client(body)


def witness_db(path: Path) -> Path:
    """A database holding two permanent sshd bans (fail2ban's schema, the columns a witness reads)."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE bips(ip TEXT, jail TEXT, timeofban INTEGER, bantime INTEGER)")
        db.executemany(
            "INSERT INTO bips VALUES (?, 'sshd', 1795236458, -1)", [("45.155.205.1",), ("45.155.205.2",)]
        )
    return path


def test_a_failed_read_during_the_wait_fails_the_run(tmp_path: Path) -> None:
    command = scripted_client(tmp_path, witness_db(tmp_path / "f2b.sqlite3"), failing_reread=True)
    with pytest.raises(
        Fail2banError, match=r"get sshd banip --with-time: fail2ban jail 'sshd' does not exist"
    ):
        read_state(command, [], TIMEOUT, restore_wait=5, restore_poll=0.05)


@pytest.mark.parametrize("db", ["missing", "junk", "disabled"])
def test_no_usable_database_reads_as_before(
    tmp_path: Path, db: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="reconcile.fail2ban")
    path = tmp_path / "f2b.sqlite3"
    if db == "junk":
        path.write_text("not sqlite at all\n" * 50)
    command = scripted_client(tmp_path, None if db == "disabled" else path)
    started = time.monotonic()
    state = read_state(command, [], TIMEOUT, restore_wait=60)
    assert time.monotonic() - started < 30  # no wait: a few client calls, however slow the machine
    assert [e.value for e in state.entries] == ["45.155.205.1"]
    assert "no restore or time zone check" in caplog.text


def test_a_scripted_restore_is_waited_for_then_given_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    command = scripted_client(tmp_path, witness_db(tmp_path / "f2b.sqlite3"))
    state = read_state(command, [], TIMEOUT, restore_wait=0.5, restore_poll=0.1)
    assert [e.value for e in state.entries] == ["45.155.205.1"]  # never emptied by the wait
    assert "fail2ban has not restored 1 of 1 stored ban(s)" in caplog.text


def test_fixture_leaves_nothing_behind() -> None:
    with running_f2b() as srv:
        assert srv.proc is not None
        pid, base = srv.proc.pid, srv.base
        assert srv.sock.exists()
    assert not base.exists()
    assert gone_or_zombie(pid)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # our own child: reaped, not a zombie


# --- failures that need no server -----------------------------------------------------------------------


def test_executable_missing() -> None:
    with pytest.raises(
        Fail2banError, match=r"fail2ban-client status: executable not found: /nonexistent/f2b-client"
    ):
        read_state(["/nonexistent/f2b-client"], [], TIMEOUT)


def test_executable_not_runnable(tmp_path: Path) -> None:
    script = tmp_path / "fail2ban-client"
    script.write_text("#!/bin/sh\necho nope\n")
    script.chmod(0o644)
    with pytest.raises(Fail2banError, match=r"fail2ban-client status: cannot run .*Permission denied"):
        run_client([str(script)], ["status"], TIMEOUT)


def test_timeout_kills_the_client_and_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # sh, not Python: it must have written the pids well within the 0.5 s, also on a loaded machine
    # (two Python start-ups once took longer, and the file was missing)
    script = 'sleep 60 & echo "$$ $!" > "$1.tmp" && mv "$1.tmp" "$1"; sleep 60'
    command = ["sh", "-c", script, "sh", str(pids)]
    started = time.monotonic()
    with pytest.raises(Fail2banError, match=r"^fail2ban-client status: timed out after 0\.5 s"):
        read_state(command, [], 0.5)
    assert time.monotonic() - started < 5
    client, grandchild = (int(p) for p in pids.read_text().split())
    with pytest.raises(ProcessLookupError):
        os.kill(client, 0)  # killed and reaped
    deadline = time.monotonic() + 5
    while not gone_or_zombie(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gone_or_zombie(grandchild)


def test_timeout_with_the_plain_sleeping_prefix() -> None:
    prefix = [sys.executable, "-c", "import time; time.sleep(60)", "--"]
    started = time.monotonic()
    with pytest.raises(Fail2banError, match=r"timed out after 0\.5 s"):
        run_client(prefix, ["status"], 0.5)
    assert time.monotonic() - started < 5


def test_unparseable_status() -> None:
    with pytest.raises(
        Fail2banError, match=r"^unparseable output from fail2ban-client status: .*'Server replied"
    ):
        read_state(fake_client("print('Server replied: pong')"), [], TIMEOUT)


def test_unparseable_ban_list() -> None:
    body = (
        "import sys\n"
        "if sys.argv[1:] == ['status']:\n"
        "    print('Status\\n|- Number of jail:\\t2\\n`- Jail list:\\tmanual, sshd')\n"
        "elif sys.argv[2] == 'manual':\n"
        "    print('')\n"
        "else:\n"
        "    print('198.18.0.1 \\t2026-11-21 04:47:38 + 3600 = 2026-11-21 05:47:38\\nJUNK LINE')\n"
    )
    with pytest.raises(Fail2banError) as err:
        read_state(fake_client(body), [], TIMEOUT)
    assert str(err.value) == (
        "unparseable output from fail2ban-client get sshd banip --with-time: "
        "jail sshd: line 2 'JUNK LINE' is not 'IP \\tSTART + SECONDS = END'"
    )


def test_fake_client_round_trip_uses_given_zone() -> None:
    body = (
        "import sys\n"
        "if sys.argv[1:] == ['status']:\n"
        "    print('Status\\n|- Number of jail:\\t1\\n`- Jail list:\\tsshd')\n"
        "else:\n"
        "    print('203.0.113.5 \\t2026-11-21 13:51:21 + 3600 = 2026-11-21 14:51:21')\n"
    )
    state = read_state(fake_client(body), [], TIMEOUT, tz=ZoneInfo("Asia/Tokyo"))
    assert state.jails == ("sshd",)
    assert state.entries == (
        BanEntry(
            "sshd",
            "203.0.113.5",
            datetime(2026, 11, 21, 4, 51, 21, tzinfo=UTC),
            datetime(2026, 11, 21, 5, 51, 21, tzinfo=UTC),
        ),
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "import sys; print('ERROR: Base configuration directory /x does not exist '); sys.exit(255)",
            r"^fail2ban-client status: exit 255: ERROR: Base configuration directory /x does not exist$",
        ),
        (
            "import sys; sys.stderr.write('2026-11-21 04:47:57,331 fail2ban   [6854]: ERROR   NOK: "
            "(\\'Invalid command\\',)\\n'); sys.exit(255)",
            r"^fail2ban-client status: exit 255: NOK: \('Invalid command',\)$",
        ),
        ("import sys; sys.exit(3)", r"^fail2ban-client status: exit 3: no output$"),
        (
            "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
            r"^fail2ban-client status: killed by signal 9$",
        ),
    ],
)
def test_other_failures_name_the_cause(body: str, message: str) -> None:
    with pytest.raises(Fail2banError, match=message):
        run_client(fake_client(body), ["status"], TIMEOUT)


def test_undecodable_output_is_a_parse_error() -> None:
    body = "import sys; sys.stdout.buffer.write(b'Status\\xff\\xfe\\n')"
    with pytest.raises(
        Fail2banError, match=r"^unparseable output from fail2ban-client status: .*Status\ufffd\ufffd"
    ):
        read_state(fake_client(body), [], TIMEOUT)


def test_success_returns_stdout_and_ignores_warnings_on_stderr() -> None:
    body = "import sys; sys.stderr.write('WARNING No filter set\\n'); print('Server replied: pong')"
    assert run_client(fake_client(body), ["ping"], TIMEOUT) == "Server replied: pong\n"


def test_runs_without_a_shell_and_logs_argv_and_duration(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="reconcile.fail2ban")
    body = "import sys; print(repr(sys.argv[1:]))"
    out = run_client(fake_client(body), ["get", "sshd", "banip", "$(touch /tmp/pwned)", "; ls"], TIMEOUT)
    assert out == "['get', 'sshd', 'banip', '$(touch /tmp/pwned)', '; ls']\n"
    [record] = [r for r in caplog.records if r.name == "reconcile.fail2ban"]
    assert record.levelno == logging.DEBUG
    assert "get sshd banip" in record.getMessage()
    assert " s" in record.getMessage() and "exit 0" in record.getMessage()


def test_stdin_is_not_inherited() -> None:
    # put readable data on our fd 0 for the duration: the client must see an empty stdin, never ours
    read_end, write_end = os.pipe()
    os.write(write_end, b"leaked")
    os.close(write_end)
    saved = os.dup(0)
    os.dup2(read_end, 0)
    try:
        out = run_client(fake_client("import sys; print(repr(sys.stdin.read()))"), [], TIMEOUT)
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(read_end)
    assert out == "''\n"
