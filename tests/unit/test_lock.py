"""The run lock (DESIGN §6, issue 7 item 5): real files, real symlinks, a real second process holding it.

The holder is another Python process running lock.hold itself; for the 10-minute rule its clock is set back,
so the start time it records is old, rather than the test waiting 10 minutes.
"""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconcile import lock
from reconcile.errors import EXIT_CONFIG, ConfigError


def test_missing_directory_is_created_0700_and_the_holder_recorded(tmp_path: Path) -> None:
    path = tmp_path / "run" / "reconcile" / "lock"
    with lock.hold(path) as held:
        assert held
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        record = path.read_text()
        assert record.startswith(f"pid={os.getpid()} since=")
        fd = os.open(path, os.O_RDONLY)
        try:
            holder = lock.read_holder(fd)
        finally:
            os.close(fd)
        assert holder is not None and holder.pid == os.getpid() and holder.since is not None
        assert abs(datetime.now(UTC) - holder.since) < timedelta(minutes=1)
    assert path.read_text() == ""  # released: an empty record means nobody holds it
    with lock.hold(path) as again:  # and the next run takes it
        assert again


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlink_at_the_lock_path_is_refused_and_left_alone(tmp_path: Path, dangling: bool) -> None:
    target = tmp_path / "precious"
    if not dangling:
        target.write_text("root's data\n")
        target.chmod(0o644)
    before = target.stat() if not dangling else None
    link = tmp_path / "lock"
    link.symlink_to(target)
    with pytest.raises(ConfigError) as exc, lock.hold(link):
        pytest.fail("the body must not run")
    assert exc.value.exit_code == EXIT_CONFIG
    assert "[run] lock_file" in str(exc.value) and "symbolic link" in str(exc.value)
    assert link.is_symlink() and os.readlink(link) == str(target)
    if before is None:
        assert not target.exists()  # O_CREAT did not create the target through the link
    else:
        after = target.stat()
        assert target.read_text() == "root's data\n"
        assert (after.st_mtime_ns, after.st_size, after.st_mode) == (
            before.st_mtime_ns,
            before.st_size,
            before.st_mode,
        )


def test_a_hard_link_at_the_lock_path_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("root's data\n")
    os.link(target, tmp_path / "lock")
    with pytest.raises(ConfigError, match="hard links"), lock.hold(tmp_path / "lock"):
        pytest.fail("the body must not run")
    assert target.read_text() == "root's data\n"


def test_something_else_than_a_file_at_the_lock_path_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "lock")  # O_NONBLOCK: refused at once, not a hang
    with pytest.raises(ConfigError, match="not a regular file"), lock.hold(tmp_path / "lock"):
        pytest.fail("the body must not run")
    (tmp_path / "dir").mkdir()
    with pytest.raises(ConfigError, match=r"\[run\] lock_file: cannot open"), lock.hold(tmp_path / "dir"):
        pytest.fail("the body must not run")


@pytest.mark.parametrize("mode", [0o1777, 0o777, 0o775, 0o757])
def test_a_directory_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    shared = tmp_path / "lockdir"  # like /run/lock (1777), the old default
    shared.mkdir()
    shared.chmod(mode)
    with pytest.raises(ConfigError) as exc, lock.hold(shared / "lock"):
        pytest.fail("the body must not run")
    message = str(exc.value)
    assert "[run] lock_file" in message and str(shared) in message and f"{mode:04o}" in message
    assert exc.value.exit_code == EXIT_CONFIG
    assert list(shared.iterdir()) == []  # nothing created in it


def test_a_directory_or_lock_file_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file away")
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    os.chown(other, 65534, 65534)
    with pytest.raises(ConfigError, match="owned by uid 65534"), lock.hold(other / "lock"):
        pytest.fail("the body must not run")
    (tmp_path / "lock").touch()
    os.chown(tmp_path / "lock", 65534, 65534)
    with pytest.raises(ConfigError, match="owned by uid 65534"), lock.hold(tmp_path / "lock"):
        pytest.fail("the body must not run")


# ------------------------------------------------------------------------------- through the command
