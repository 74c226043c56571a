"""The one place that runs subprocesses: fail2ban-client, its answer or a Fail2banError that says why."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence

from reconcile.errors import Fail2banError

log = logging.getLogger("reconcile.fail2ban")

# fail2ban-client logs errors on stderr as `2026-11-21 04:49:48,150 fail2ban   [9442]: ERROR   message`
_LOG_PREFIX = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d+ \S+\s+\[\d+\]: [A-Z]+\s+")
_NO_SOCKET = re.compile(r"Failed to access socket path: (.*?)\. Is fail2ban running\?")
_REFUSED = re.compile(r"Connection refused")
_NO_PERMISSION = re.compile(r"Permission denied to socket: (.*?), \(you must be root\)")
_NO_JAIL = re.compile(r"Sorry but the jail '(.*)' does not exist")


def run_client(command: Sequence[str], args: Sequence[str], timeout: float) -> str:
    """Run `command + args` and return its stdout; any failure is a Fail2banError saying why."""
    argv = [*command, *args]
    what = " ".join(["fail2ban-client", *args])
    if not command:
        raise Fail2banError(f"{what}: the fail2ban command is empty (see [fail2ban] command)")
    started = time.monotonic()
    try:
        # own session, so a timeout kills the whole group (a prefix such as sudo or setpriv may fork);
        # undecodable bytes are replaced, so odd output ends as a parse error, not a UnicodeDecodeError
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,
        )
    except FileNotFoundError:
        raise Fail2banError(
            f"{what}: executable not found: {command[0]} (is fail2ban installed? see [fail2ban] command)"
        ) from None
    except (OSError, ValueError) as exc:
        raise Fail2banError(f"{what}: cannot run {shlex.join(argv)}: {exc}") from None
    with proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            log.debug("%s timed out after %.3f s", shlex.join(argv), time.monotonic() - started)
            raise Fail2banError(f"{what}: timed out after {timeout:g} s (process killed)") from None
        except OSError as exc:
            _kill_group(proc)
            raise Fail2banError(f"{what}: reading its output failed: {exc}") from None
        except BaseException:
            _kill_group(proc)
            raise
    log.debug("%s -> exit %s in %.3f s", shlex.join(argv), proc.returncode, time.monotonic() - started)
    if proc.returncode != 0:
        raise Fail2banError(_failure(what, proc.returncode, stdout, stderr))
    return stdout


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group is already gone
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _failure(what: str, returncode: int, stdout: str, stderr: str) -> str:
    """The cause of a failed call, from fail2ban-client's own words (fail2ban-facts.md §5-7)."""
    messages = [_LOG_PREFIX.sub("", line).strip() for line in (stdout + "\n" + stderr).splitlines()]
    messages = [m for m in messages if m]
    text = "\n".join(messages)
    if m := _NO_PERMISSION.search(text):
        return (
            f"{what}: permission denied on fail2ban's socket {m.group(1)}: "
            "run reconcile as root (or as the user fail2ban-server runs as)"
        )
    if m := _NO_SOCKET.search(text):
        return (
            f"fail2ban is not running: {what}: socket {m.group(1)} does not exist"
            " (or this user cannot reach it)"
        )
    if _REFUSED.search(text):
        return (
            f"fail2ban is not running: {what}: connection refused"
            " (stale socket: fail2ban-server died without removing it?)"
        )
    if m := _NO_JAIL.search(text):
        return f"{what}: fail2ban jail '{m.group(1)}' does not exist"
    if returncode < 0:
        return f"{what}: killed by signal {-returncode}"
    first = messages[0] if messages else "no output"
    return f"{what}: exit {returncode}: {first}"
