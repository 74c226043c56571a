"""The run lock (DESIGN §6, issue 7 item 5): real files, real symlinks, a real second process holding it.

The holder is another Python process running lock.hold itself; for the 10-minute rule its clock is set back,
so the start time it records is old, rather than the test waiting 10 minutes.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconcile import lock
from reconcile.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, LockStuck
from tests.support.cf_emulator import TOKEN, ZONE_ID
from tests.support.harness import RECONCILE, toml_value

HOLDER = """
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from reconcile import lock
back = timedelta(minutes=float(sys.argv[2]))
with lock.hold(Path(sys.argv[1]), now=lambda: datetime.now(UTC) - back) as held:
    print("held" if held else "busy", flush=True)
    sys.stdin.read()  # until the test closes stdin
"""


class Holder:
    """Another process holding the lock; `minutes_ago`: how old the start time it records is."""

    def __init__(self, path: Path, minutes_ago: float = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path), str(minutes_ago)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == "held\n"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        if holder.proc.poll() is None:
            holder.proc.kill()
            holder.proc.wait(timeout=30)


def test_a_second_process_holding_the_lock_means_nothing_to_do(tmp_path: Path, holders: list[Holder]) -> None:
    path = tmp_path / "lock"
    holder = Holder(path)
    holders.append(holder)
    record = path.read_text()
    assert record.startswith(f"pid={holder.pid} since=")
    with lock.hold(path) as held:
        assert not held
    assert path.read_text() == record  # the waiting run wrote nothing
    holder.release()
    with lock.hold(path) as held:
        assert held


def test_the_kernel_releases_the_lock_of_a_killed_holder(tmp_path: Path, holders: list[Holder]) -> None:
    path = tmp_path / "lock"
    holder = Holder(path, minutes_ago=30)  # its record stays behind, old: not a reason to fail
    holders.append(holder)
    holder.proc.kill()
    holder.proc.wait(timeout=30)
    with lock.hold(path) as held:
        assert held
        assert path.read_text().startswith(f"pid={os.getpid()} ")


def test_a_lock_held_for_more_than_10_minutes_is_a_failure_naming_the_holder(
    tmp_path: Path, holders: list[Holder]
) -> None:
    path = tmp_path / "lock"
    holder = Holder(path, minutes_ago=11)
    holders.append(holder)
    with pytest.raises(LockStuck) as exc, lock.hold(path):
        pytest.fail("the body must not run")
    assert exc.value.exit_code == EXIT_FAILURE
    assert exc.value.pid == holder.pid
    message = str(exc.value)
    assert "[run] lock_file" in message and str(path) in message
    assert f"pid {holder.pid}" in message and "since " in message and "11 minutes" in message


FOREIGN = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize(("minutes_ago", "stuck"), [(11, True), (5, False)])
def test_a_holder_that_wrote_no_record_is_judged_by_the_files_age(
    tmp_path: Path, minutes_ago: int, stuck: bool
) -> None:
    """E.g. `flock /run/reconcile/lock sleep infinity` by hand: no record, still not "another run"."""
    path = tmp_path / "lock"
    with lock.hold(path):
        pass  # a past run: the file exists, its record emptied on release
    old = time.time() - minutes_ago * 60
    os.utime(path, (old, old))
    proc = subprocess.Popen(
        [sys.executable, "-c", FOREIGN, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        if stuck:
            with pytest.raises(LockStuck) as exc, lock.hold(path):
                pytest.fail("the body must not run")
            assert exc.value.pid == proc.pid  # found in /proc/locks
            assert f"held by pid {proc.pid} since " in str(exc.value)
        else:
            with lock.hold(path) as held:
                assert not held
        assert path.read_text() == ""
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_a_lock_held_for_9_minutes_is_another_run(tmp_path: Path, holders: list[Holder]) -> None:
    holders.append(Holder(tmp_path / "lock", minutes_ago=9))
    with lock.hold(tmp_path / "lock") as held:
        assert not held


def test_ten_minutes_is_measured_with_the_waiting_runs_clock(tmp_path: Path, holders: list[Holder]) -> None:
    path = tmp_path / "lock"
    holders.append(Holder(path))
    later = datetime.now(UTC) + timedelta(minutes=10, seconds=30)
    with pytest.raises(LockStuck), lock.hold(path, now=lambda: later):
        pytest.fail("the body must not run")


# ------------------------------------------------------------------------------- through the command


def command_config(tmp_path: Path, lock_file: Path) -> tuple[Path, Path]:
    """A config whose fail2ban command only records that it ran: the lock must decide before that."""
    marker = tmp_path / "fail2ban-ran"
    token = tmp_path / "API_TOKEN"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    values: dict[str, dict[str, Any]] = {
        "fail2ban": {"command": ["/bin/sh", "-c", f'echo "$@" >> {marker}; exit 1', "fail2ban-client"]},
        "cloudflare": {
            "api_base_url": "http://127.0.0.1:9/client/v4",
            "api_token_file": str(token),
            "zone_ids": [ZONE_ID],
        },
        "policy": {"host_id": "web1"},
        "run": {"lock_file": str(lock_file)},
    }
    lines = []
    for section, keys in values.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in keys.items()]
    path = tmp_path / "reconcile.toml"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path, marker


def run_command(config: Path) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("CLOUDFLARE_", "CREDENTIALS_", "JOURNAL_"))
    }
    return subprocess.run(
        [str(RECONCILE), "--config", str(config)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_command_leaves_a_symlink_at_the_lock_path_and_its_target_alone(tmp_path: Path) -> None:
    target = tmp_path / "shadow"
    target.write_text("root:*:19000:0:99999:7:::\n")
    before = target.stat()
    link = tmp_path / "locks" / "lock"
    link.parent.mkdir(mode=0o700)
    link.symlink_to(target)
    config, marker = command_config(tmp_path, link)
    result = run_command(config)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert f"[run] lock_file: {link} is a symbolic link" in result.stderr
    assert os.readlink(link) == str(target)
    assert target.read_text() == "root:*:19000:0:99999:7:::\n"
    assert target.stat().st_mtime_ns == before.st_mtime_ns
    assert not marker.exists()  # refused before fail2ban was asked anything
    assert TOKEN not in result.stdout + result.stderr


def test_command_exits_1_naming_the_holder_of_a_lock_held_over_10_minutes(
    tmp_path: Path, holders: list[Holder]
) -> None:
    lock_file = tmp_path / "locks" / "lock"
    config, marker = command_config(tmp_path, lock_file)
    holder = Holder(lock_file, minutes_ago=25)
    holders.append(holder)
    result = run_command(config)
    assert result.returncode == EXIT_FAILURE, result.stderr
    assert f"held by pid {holder.pid} since " in result.stderr and "25 minutes" in result.stderr
    assert not marker.exists()
    # A fresh holder is another run: exit 0, quietly, and fail2ban is not asked either.
    holder.release()
    holders.append(Holder(lock_file))
    result = run_command(config)
    assert result.returncode == EXIT_OK, result.stderr
    assert "another run holds" in result.stderr and "error" not in result.stderr
    assert not marker.exists()


def test_command_creates_the_lock_directory_0700(tmp_path: Path) -> None:
    lock_file = tmp_path / "run" / "reconcile" / "lock"
    config, marker = command_config(tmp_path, lock_file)
    result = run_command(config)
    assert result.returncode == EXIT_FAILURE  # the recording fail2ban command fails the run, as it should
    assert marker.exists()  # so the lock was taken and the run went on to read fail2ban
    assert stat.S_IMODE(lock_file.parent.stat().st_mode) == 0o700
    assert lock_file.read_text() == ""  # released
