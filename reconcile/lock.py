"""One run at a time: an advisory lock on a file (DESIGN §6)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from reconcile.errors import ConfigError


@contextmanager
def hold(path: Path) -> Iterator[bool]:
    """Yield True while holding the lock, False at once if another process holds it.

    flock is released by the kernel when the process dies, so a crashed run never leaves a stale lock.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"[run] lock_file: cannot open {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield True
    finally:
        os.close(fd)
