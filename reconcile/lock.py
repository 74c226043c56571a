"""One run at a time: an advisory lock on a file in a root-only directory (DESIGN §6).

The lock's directory is checked on an open descriptor and the lock file is opened relative to it without
following links, so nobody but root can swap either; nothing is ever written through a path, only through
the descriptor that was checked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconcile.errors import ConfigError, LockStuck

STUCK_AFTER = timedelta(minutes=10)  # no run takes this long ([run] max_seconds is at most 5 minutes)
RECHECK_SECONDS = 0.2  # a holder that has just taken the lock may not have written its record yet
_RECORD = re.compile(r"pid=([0-9]{1,10}) since=(\S+)\n")


@dataclass(frozen=True)
class Holder:
    """What the holder wrote into the lock file when it took the lock."""

    pid: int | None
    since: datetime | None


def _utc_now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def hold(path: Path, *, now: Callable[[], datetime] = _utc_now) -> Iterator[bool]:
    """Yield True while holding the lock, False at once if another run holds it.

    A lock held for longer than STUCK_AFTER raises LockStuck (exit 1) naming the holder. Setup problems
    (a symlink at the path, a directory others can write) are ConfigError naming [run] lock_file.
    flock is released by the kernel when the process dies, so a crashed run never leaves a stale lock.
    """
    fd = _open_lock(path)
    try:
        for attempt in range(2):
            if not _try_flock(fd):
                holder = read_holder(fd) or _unrecorded_holder(fd)
                if holder.since is None or now() - holder.since <= STUCK_AFTER:
                    yield False
                    return
                if attempt == 0:
                    # Maybe a new holder that has not yet replaced the previous run's record: look again.
                    time.sleep(RECHECK_SECONDS)
                    continue
                raise _stuck(path, holder, now())
            try:
                _write_record(fd, f"pid={os.getpid()} since={now().isoformat(timespec='seconds')}\n")
            except OSError as exc:
                raise ConfigError(f"[run] lock_file: cannot write {path}: {exc.strerror}") from None
            try:
                yield True
            finally:
                # Still holding it: an empty record means "nobody". Best effort: never mask the run's error.
                with contextlib.suppress(OSError):
                    _write_record(fd, "")
            return
    finally:
        os.close(fd)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def read_holder(fd: int) -> Holder | None:
    """The holder's record; None when there is none (empty or not ours)."""
    match = _RECORD.match(os.pread(fd, 256, 0).decode("ascii", "replace"))
    if not match:
        return None
    try:
        since = datetime.fromisoformat(match.group(2))
    except ValueError:
        return Holder(int(match.group(1)), None)
    return Holder(int(match.group(1)), since if since.tzinfo else since.replace(tzinfo=UTC))


def _unrecorded_holder(fd: int) -> Holder:
    """A holder that wrote no record (not a reconcile run, e.g. `flock` by hand, or one just starting).

    Since when is then at least the file's last change: every run writes on taking and on leaving the lock.
    The pid comes from the kernel's list of locks, when this process may read it."""
    st = os.fstat(fd)
    return Holder(_flock_pid(st), datetime.fromtimestamp(st.st_mtime, UTC))


def _flock_pid(st: os.stat_result) -> int | None:
    # /proc/locks: "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF" (major:minor in hex, inode decimal).
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted and fields[4].isdigit():
            return int(fields[4]) or None
    return None


def _stuck(path: Path, holder: Holder, at: datetime) -> LockStuck:
    assert holder.since is not None
    minutes = int((at - holder.since).total_seconds() // 60)
    since = holder.since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    who = f"pid {holder.pid}" if holder.pid else "a process whose pid this run cannot see"
    look = f"see `ps -fp {holder.pid}`" if holder.pid else f"see `fuser -v {path}`"
    return LockStuck(
        f"[run] lock_file: {path} is held by {who} since {since} ({minutes} minutes; "
        f"no run takes more than {STUCK_AFTER.seconds // 60}): it is stuck or not a reconcile run. "
        f"No ban reaches Cloudflare until it lets go: {look}",
        pid=holder.pid,
        since=since,
    )


def _write_record(fd: int, text: str) -> None:
    # Overwrite, then cut: a reader never sees an empty file in between, only the first line counts.
    data = text.encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))


def _open_lock(path: Path) -> int:
    """The lock file's descriptor: a regular file of ours, with one link, in a root-only directory."""
    directory = path.parent
    try:
        dir_fd = _open_directory(directory)
    except OSError as exc:
        raise ConfigError(f"[run] lock_file: cannot open the directory {directory}: {exc.strerror}") from None
    try:
        _check_directory(path, directory, os.fstat(dir_fd))
        # O_NOFOLLOW: a symlink at the path is refused (ELOOP) and neither it nor its target is touched.
        # O_NONBLOCK: a FIFO at the path must not hang the run; it is refused below.
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        fd = os.open(path.name, flags, 0o600, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(
                f"[run] lock_file: {path} is a symbolic link; refusing to follow it (left as it is). "
                f"Remove it (rm {path}) or set [run] lock_file to a path in a root-only directory"
            ) from None
        raise ConfigError(f"[run] lock_file: cannot open {path}: {exc.strerror}") from None
    finally:
        os.close(dir_fd)
    try:
        _check_file(path, os.fstat(fd))
    except ConfigError:
        os.close(fd)
        raise
    return fd


def _open_directory(directory: Path) -> int:
    directory.parent.mkdir(parents=True, exist_ok=True)  # /run itself always exists
    try:
        os.mkdir(directory, 0o700)  # /run/reconcile after a boot, under cron (systemd makes it itself)
    except OSError:
        if not directory.is_dir():  # EEXIST, or EROFS for an existing one under ProtectSystem=strict
            raise
    return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _check_directory(path: Path, directory: Path, st: os.stat_result) -> None:
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        # Like /run/lock (1777): anyone could hold the lock (every run then does nothing) or plant links.
        raise ConfigError(
            f"[run] lock_file: {path} is in {directory}, which group or others can write (mode {mode:04o}): "
            "another user could hold the lock and stop every run. Use a root-only directory, "
            "e.g. the default /run/reconcile/lock"
        )
    if st.st_uid not in (0, os.geteuid()):
        raise ConfigError(
            f"[run] lock_file: {path} is in {directory}, owned by uid {st.st_uid}, who could hold the lock; "
            "use a directory of root's, e.g. the default /run/reconcile/lock"
        )


def _check_file(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"[run] lock_file: {path} is not a regular file; remove it or choose another path")
    if st.st_nlink != 1:
        # A hard link to another file: writing the record would write into that file.
        raise ConfigError(f"[run] lock_file: {path} has {st.st_nlink} hard links; remove it (rm {path})")
    if st.st_uid not in (0, os.geteuid()):
        raise ConfigError(f"[run] lock_file: {path} is owned by uid {st.st_uid}; remove it (rm {path})")


def location_problem(path: Path) -> str | None:
    """Why a run could not use `path` as its lock (for --check; creates nothing); None when it could."""
    directory = path.parent
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return None if os.access(directory.parent, os.W_OK | os.X_OK) else f"cannot create {directory}"
    except OSError as exc:
        return f"cannot read {directory}: {exc.strerror}"
    try:
        _check_directory(path, directory, st)
    except ConfigError as exc:
        return str(exc).removeprefix("[run] lock_file: ")
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"{directory} is not writable by this user"
    if path.is_symlink():
        return f"{path} is a symbolic link (a run refuses it)"
    return None
