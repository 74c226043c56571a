"""fail2ban's database as a witness, through the installed command (real fail2ban-server, the emulator).

- Restore: after a (re)start fail2ban restores its bans asynchronously, so a run can see fewer bans than
  the database holds. tests/support/f2b_restore_wrapper.py makes that window deterministic: it hides some bans
  from the first answers of `get JAIL banip --with-time` while the real database holds them.
- Time zone: fail2ban prints its times in its own zone; a server started with another TZ than the command.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from reconcile.fail2ban import state as state_module
from reconcile.fail2ban.client import run_client as real_client
from reconcile.fail2ban.state import RESTORE_WAIT, read_state
from tests.support.cf_emulator import CloudflareEmulator
from tests.support.f2b_server import F2B, running_f2b
from tests.support.harness import Harness, make_harness

pytestmark = pytest.mark.fail2ban

WRAPPER = Path(__file__).resolve().parents[1] / "support" / "f2b_restore_wrapper.py"
SHOWN = [f"45.155.205.{i}" for i in range(10, 17)]  # 7 bans the server always shows
HIDDEN = ["45.155.205.30", "45.155.205.31"]  # 2 bans "not restored yet": under the 30 % expiry guard
TIMEOUT = 30.0
SERVER_TZ = "America/Los_Angeles"  # behind UTC: read as UTC, its bans look hours older than they are


def hide(h: Harness, ips: list[str], calls: int) -> Path:
    """Point the config at the wrapper, hiding `ips` from the first `calls` ban listings."""
    control = h.workdir / "restore.json"
    control.write_text(json.dumps({"command": h.f2b.command, "hide": ips, "calls": calls, "seen": {}}))
    return h.config(fail2ban={"command": [sys.executable, str(WRAPPER), str(control)]})


def listings(control: Path, jail: str = "sshd") -> int:
    """How often the run listed `jail`'s bans."""
    seen: dict[str, int] = json.loads(control.read_text())["seen"]
    return seen.get(jail, 0)


def methods(h: Harness) -> list[str]:
    return [w.method for w in h.cf.writes()]


def seeded(h: Harness) -> dict[str, Any]:
    """Every address banned and synced by a first, normal run."""
    h.f2b.ban("sshd", *SHOWN[:4], *HIDDEN)
    h.f2b.ban("recidive", *SHOWN[4:])
    first = h.run()
    assert first.returncode == 0, first.stderr
    rules = h.rules()
    assert set(rules) == {*SHOWN, *HIDDEN}
    h.cf.clear_log()
    return rules


def test_a_run_during_the_restore_waits_for_it_and_deletes_nothing(harness: Harness) -> None:
    before = seeded(harness)
    config = hide(harness, HIDDEN, calls=3)  # the first listing and two re-reads miss them

    during = harness.run("-v", config=config)
    assert during.returncode == 0, during.stderr
    assert methods(harness) == []  # no DELETE, and nothing else either
    assert harness.rules() == before
    assert "fail2ban is restoring bans: 2 stored ban(s) not shown yet" in during.stderr
    assert "fail2ban restored the 2 stored ban(s) in" in during.stderr
    control = config.parent / "restore.json"
    # It waited for the bans, not for the 10 s limit: sshd re-read until the wrapper stopped hiding, then
    # no more (counted, not timed: a loaded machine makes every call slow).
    # (a run that writes nothing reads fail2ban once: no second read, reconcile/catch_up.py)
    assert listings(control) == 4
    assert listings(control, "recidive") == 1  # a jail with nothing missing is read once

    # the restore has finished (the wrapper hides nothing any more): still nothing to delete
    after = harness.run(config=config)
    assert after.returncode == 0, after.stderr
    assert methods(harness) == []
    assert "restor" not in after.stderr
    assert "9 kept" in after.stderr


@pytest.mark.slow
def test_bans_never_restored_are_treated_as_not_banned_after_the_wait(harness: Harness) -> None:
    seeded(harness)
    config = hide(harness, HIDDEN, calls=10**6)  # fail2ban never shows them

    started = time.monotonic()
    run = harness.run(config=config)
    took = time.monotonic() - started
    assert run.returncode == 0, run.stderr
    # at least the whole wait; the wait itself ends within 20 s (the message below), the rest of the run
    # gets room for a loaded machine
    assert RESTORE_WAIT <= took < RESTORE_WAIT + 30, f"{took:.1f} s"
    assert re.search(
        r"fail2ban has not restored 2 of 2 stored ban\(s\) after 1\d\.\d s: treating them as not banned",
        run.stderr,
    ), run.stderr
    assert methods(harness) == ["DELETE", "DELETE"]
    assert set(harness.rules()) == set(SHOWN)


def quick_run(h: Harness, hidden: list[str] | None = None) -> str:
    """A run that must not wait for a restore (`hidden` never shown): its stderr.

    Through the wrapper, which counts the listings: a run that waited would have re-read a jail. Counted,
    not timed: on a loaded machine a run that does not wait can still take as long as the 10 s limit.
    """
    config = hide(h, hidden or [], calls=10**6 if hidden else 0)
    run = h.run("-v", config=config)
    assert run.returncode == 0, run.stderr
    assert "fail2ban is restoring" not in run.stderr
    seen = json.loads((config.parent / "restore.json").read_text())["seen"]
    # Each jail once by the run's read and once by its second read after writing (catch_up.py).
    assert seen and set(seen.values()) == {2}, f"a jail was re-read: {seen}"
    return run.stderr


def test_a_ban_longer_than_its_jail_allows_is_not_waited_for(harness: Harness) -> None:
    seeded(harness)
    # The database now holds the two as permanent bans of sshd (bantime 1 h) from 2 h ago: fail2ban's
    # restore clips them to 1 h, so they have ended and will never come back (one short write, as
    # fail2ban's own are).
    with contextlib.closing(sqlite3.connect(harness.f2b.dbfile, timeout=5)) as db, db:
        db.execute(
            "UPDATE bips SET bantime = -1, timeofban = ? WHERE jail = 'sshd' AND ip IN (?, ?)",
            (int(time.time()) - 7200, *HIDDEN),
        )
    stderr = quick_run(harness, HIDDEN)
    assert "2 stored ban(s) not shown that fail2ban will not restore" in stderr
    assert methods(harness) == ["DELETE", "DELETE"]  # hidden and not coming back: not banned
    assert set(harness.rules()) == set(SHOWN)


def test_bans_of_a_jail_fail2ban_no_longer_has_are_not_waited_for(harness: Harness) -> None:
    seeded(harness)
    harness.f2b.ban("nginx-http-auth", "45.155.205.40")
    assert harness.run().returncode == 0
    harness.cf.clear_log()
    harness.f2b.client("stop", "nginx-http-auth")  # its bans stay in the database
    quick_run(harness)
    assert methods(harness) == ["DELETE"]
    assert set(harness.rules()) == {*SHOWN, *HIDDEN}


@pytest.fixture
def elsewhere(cf: CloudflareEmulator, tmp_path: Path) -> Iterator[Harness]:
    """A harness whose fail2ban-server runs in another zone than the command (which runs in UTC)."""
    with running_f2b(server_env={"TZ": SERVER_TZ}) as srv:
        yield from make_harness(srv, cf, tmp_path)


@pytest.fixture
def elsewhere_without_db(cf: CloudflareEmulator, tmp_path: Path) -> Iterator[Harness]:
    """The same with `dbfile = None`: nothing to detect the zone from, only [fail2ban] timezone."""
    with running_f2b(server_env={"TZ": SERVER_TZ}, dbfile="None") as srv:
        yield from make_harness(srv, cf, tmp_path)


UTC_ENV = {"TZ": "UTC"}


def seeded_elsewhere(h: Harness) -> dict[str, Any]:
    """1 h bans (they look ended when read 8 h early) and 1 w bans (they do not), synced zone-aware."""
    h.f2b.ban("sshd", *SHOWN[:2])
    h.f2b.ban("recidive", *SHOWN[2:])
    config = h.config(fail2ban={"timezone": SERVER_TZ})
    first = h.run(config=config, env=UTC_ENV)
    assert first.returncode == 0, first.stderr
    rules = h.rules()
    assert set(rules) == set(SHOWN)
    h.cf.clear_log()
    return rules


def test_another_zone_with_timezone_set_deletes_nothing(elsewhere: Harness) -> None:
    before = seeded_elsewhere(elsewhere)
    config = elsewhere.config(fail2ban={"timezone": SERVER_TZ})
    run = elsewhere.run(config=config, env=UTC_ENV)
    assert run.returncode == 0, run.stderr
    assert methods(elsewhere) == []
    assert elsewhere.rules() == before
    assert "fail2ban's times are not in" not in run.stderr  # the zone agrees with the database: no warning


def test_another_zone_without_a_database_with_timezone_set_deletes_nothing(
    elsewhere_without_db: Harness,
) -> None:
    h = elsewhere_without_db
    before = seeded_elsewhere(h)
    run = h.run("-v", config=h.config(fail2ban={"timezone": SERVER_TZ}), env=UTC_ENV)
    assert run.returncode == 0, run.stderr
    assert methods(h) == []
    assert h.rules() == before
    assert "fail2ban keeps no database file" in run.stderr


def test_another_zone_detected_from_the_database_deletes_nothing(elsewhere: Harness) -> None:
    before = seeded_elsewhere(elsewhere)
    config = elsewhere.config(fail2ban={"timezone": ""})  # this machine's zone: UTC, the wrong one
    run = elsewhere.run(config=config, env=UTC_ENV)
    assert run.returncode == 0, run.stderr
    assert methods(elsewhere) == []  # no DELETE of the 1 h bans, no PATCH to a wrong lease either
    assert elsewhere.rules() == before
    warnings = [line for line in run.stderr.splitlines() if "fail2ban's times are not in" in line]
    assert len(warnings) == 1, run.stderr
    # Los Angeles is UTC-08:00 in winter, UTC-07:00 in summer (the test may run in either)
    assert re.search(
        r"not in this machine's zone \(UTC\): its database implies UTC-0[78]:00 \(7 of 7 compared",
        warnings[0],
    ), warnings[0]
    assert "[fail2ban] timezone" in warnings[0]


def test_an_unknown_timezone_is_a_config_error_before_fail2ban_is_read(harness: Harness) -> None:
    harness.f2b.ban("sshd", *SHOWN)
    control = harness.workdir / "restore.json"
    control.write_text(json.dumps({"command": harness.f2b.command, "hide": [], "calls": 0, "seen": {}}))
    config = harness.config(
        fail2ban={"timezone": "Mars/Olympus_Mons", "command": [sys.executable, str(WRAPPER), str(control)]}
    )
    run = harness.run(config=config)
    assert run.returncode == 2, run.stderr
    assert "[fail2ban] timezone: unknown time zone 'Mars/Olympus_Mons'" in run.stderr
    assert listings(control) == 0 and harness.cf.requests == []


def early_reading(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """An Event set once the first reading of fail2ban's database (the one alongside the server) ended."""
    early = threading.Event()
    real_stored = state_module._stored_bans

    def stored(path: str) -> Any:
        found = real_stored(path)
        early.set()
        return found

    monkeypatch.setattr(state_module, "_stored_bans", stored)
    return early


def test_a_ban_lifted_while_the_server_answers_is_not_waited_for(
    f2b: F2B, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The database is read while the server answers: a ban lifted in between is in that early reading and
    not in the server's answer. The database read after the server decides, so nothing is waited for."""
    lifted = "45.155.205.50"
    f2b.ban("sshd", *SHOWN[:2], lifted)
    early = early_reading(monkeypatch)
    listed: list[list[str]] = []

    def client(command: Sequence[str], args: list[str], timeout: float) -> str:
        if args[:3] == ["get", "sshd", "banip"]:
            if not listed:  # the first listing: the ban is lifted after the early reading
                assert early.wait(TIMEOUT)
                real_client(command, ["set", "sshd", "unbanip", lifted], timeout)
            listed.append(args)
        return real_client(command, args, timeout)

    monkeypatch.setattr(state_module, "run_client", client)
    with caplog.at_level(logging.DEBUG, logger="reconcile.fail2ban"):
        state = read_state(f2b.command, ["sshd"], TIMEOUT, restore_wait=TIMEOUT)
    assert {e.value for e in state.entries} == set(SHOWN[:2])
    assert len(listed) == 1, "the lifted ban was waited for as one to restore"
    assert "restor" not in caplog.text


def test_a_database_locked_at_the_early_reading_is_read_after_the_server(
    f2b: F2B, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fail2ban's own write holds the database while it is read alongside the server: that reading is
    unusable, so the one after the server decides, and bans still being restored are waited for."""
    f2b.ban("sshd", *SHOWN[:2], *HIDDEN)
    early = early_reading(monkeypatch)
    listed: list[list[str]] = []

    def client(command: Sequence[str], args: list[str], timeout: float) -> str:
        answer = real_client(command, args, timeout)
        if args[:3] != ["get", "sshd", "banip"]:
            return answer
        listed.append(args)
        if len(listed) == 1:  # the first answer: the locked early reading is over; the restore goes on
            assert early.wait(TIMEOUT)
            writer.rollback()
            return "".join(line for line in answer.splitlines(True) if not line.startswith(tuple(HIDDEN)))
        return answer

    monkeypatch.setattr(state_module, "run_client", client)
    locked = sqlite3.connect(f2b.dbfile, timeout=5, isolation_level=None, check_same_thread=False)
    with contextlib.closing(locked) as writer:
        writer.execute("BEGIN EXCLUSIVE")  # as fail2ban's own write holds it, for longer than 1 s
        state = read_state(f2b.command, ["sshd"], TIMEOUT, restore_wait=TIMEOUT)
    assert {e.value for e in state.entries} == {*SHOWN[:2], *HIDDEN}
    assert len(listed) >= 2, "the bans still being restored were not waited for"
