"""Reading the configuration file: only a regular file that nobody but its owner can write, UTF-8 TOML."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Any

from reconcile.errors import ConfigError


def read_toml(path: Path) -> dict[str, Any] | None:
    """The file's tables, None when it does not exist; any other problem is a ConfigError naming the file."""
    raw = _read_bytes(path)
    if raw is None:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "TOML files must be UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def refuse_writable_by_others(path: Path, st: os.stat_result, what: str) -> None:
    """A file naming what root runs (or reads as a secret) must not be writable by anyone but its owner,
    and its owner must be root or us (the owner can chmod it back): as ssh does with its files."""
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise ConfigError(
            f"{path}: {what} has mode {mode:04o}, writable by group or others, and it decides what runs "
            f"as root; refusing it. Fix: chmod go-w {path}"
        )
    if st.st_uid not in (0, os.geteuid()):
        raise ConfigError(
            f"{path}: {what} is owned by uid {st.st_uid}, who could change it; refusing it. "
            f"Fix: chown root {path}"
        )


def _read_bytes(path: Path) -> bytes | None:
    """The file's bytes, None when it does not exist. Mode and type are checked on the open file itself,
    so what is read is what was checked."""
    try:
        # O_NONBLOCK: a FIFO at the path must not hang the run in open(); it is refused below.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied reading the configuration") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot open the configuration: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{path}: is a directory; --config must name the configuration file")
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: not a regular file; --config must name the configuration file")
        refuse_writable_by_others(path, st, "the configuration file")
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc.strerror}") from None
    finally:
        os.close(fd)
