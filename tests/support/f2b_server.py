"""A real, private fail2ban-server for tests (fail2ban-facts.md §13).

Foreground server under Popen in a short /tmp/f2b-XXXX dir (AF_UNIX paths must stay under 108 bytes),
five jails with no-op actions, so no firewall is touched. The `f2b` fixture gives a started server and
leaves no process and no directory behind.
"""

from __future__ import annotations

import ast
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

JAILS = ("manual", "nginx-http-auth", "nginx-limit-req", "recidive", "sshd")

FAIL2BAN_CONF = """\
[Definition]
loglevel = INFO
logtarget = {run}/fail2ban.log
syslogsocket = auto
socket = {run}/fail2ban.sock
pidfile = {run}/fail2ban.pid
allowipv6 = auto
dbfile = {dbfile}
dbpurgeage = 1d
"""

NOOP_ACTION = """\
# Does nothing: no firewall is touched. Empty commands are skipped by fail2ban.
[Definition]
actionstart =
actionstop =
actioncheck =
actionban =
actionunban =
"""

# recidive watches its own file, not fail2ban.log: seeded bans must not breed recidive bans (pitfall 7).
JAIL_CONF = r"""
[DEFAULT]
backend = polling
datepattern = {{NONE}}
filter =
action = noop
bantime = 1h
findtime = 10m
maxretry = 3

[sshd]
enabled = true
logpath = {log}/auth.log
failregex = ^Failed password for \S+ from <HOST>

[nginx-limit-req]
enabled = true
logpath = {log}/nginx-error.log
failregex = limiting requests, excess: [\d.]+ by zone "[^"]+", client: <HOST>

[recidive]
enabled = true
logpath = {log}/recidive.log
bantime = 1w
findtime = 1d
failregex = \[(?!recidive\])[^\]]+\] Ban <HOST>

[nginx-http-auth]
enabled = true
logpath = {log}/nginx-error.log
failregex = user "[^"]*":? (?:password mismatch|was not found in "[^"]*"), client: <HOST>
bantime = 10m
bantime.increment = true

[manual]
enabled = true
logpath = {log}/auth.log
failregex = ^NEVER MATCHES <HOST>$
bantime = -1
"""

CLIENT_TIMEOUT = 60.0

# `extra_jails=N` adds N more jails like `manual` (never matching, bans by hand only), e.g. for benchmarks.
EXTRA_JAIL = """
[{name}]
enabled = true
logpath = {log}/auth.log
failregex = ^NEVER MATCHES <HOST>$
"""


def extra_jail_names(count: int) -> tuple[str, ...]:
    return tuple(f"extra{i:02d}" for i in range(1, count + 1))


class F2B:
    """One private fail2ban-server and the paths around it."""

    def __init__(
        self,
        base: Path,
        *,
        server_env: Mapping[str, str] | None = None,
        dbfile: str | None = None,
        extra_jails: int = 0,
    ) -> None:
        self.base = base
        self.conf = base / "conf"
        self.run = base / "run"
        self.log = base / "log"
        self.sock = self.run / "fail2ban.sock"
        self.server_out = base / "server.out"
        # fail2ban's `dbfile`: a path (default run/fail2ban.sqlite3), "None" or ":memory:"
        self.dbfile = dbfile if dbfile is not None else str(self.run / "fail2ban.sqlite3")
        self.command = ["fail2ban-client", "-c", str(self.conf)]
        self.server_env = dict(server_env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra_jails = extra_jail_names(extra_jails)
        self.jails = tuple(sorted((*JAILS, *self.extra_jails)))

    def write_config(self) -> None:
        for d in (self.conf / "action.d", self.run, self.log):
            d.mkdir(parents=True, exist_ok=True)
        # every logpath must exist before the server reads the config (pitfall 1)
        for name in ("auth.log", "nginx-error.log", "recidive.log"):
            (self.log / name).touch()
        (self.conf / "fail2ban.conf").write_text(FAIL2BAN_CONF.format(run=self.run, dbfile=self.dbfile))
        (self.conf / "action.d" / "noop.conf").write_text(NOOP_ACTION)
        extra = "".join(EXTRA_JAIL.format(name=name, log=self.log) for name in self.extra_jails)
        (self.conf / "jail.conf").write_text(JAIL_CONF.format(log=self.log) + extra)

    def client(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [*self.command, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT,
        )
        if check and r.returncode != 0:
            raise RuntimeError(f"fail2ban-client {' '.join(args)} -> rc {r.returncode}: {r.stdout}{r.stderr}")
        return r

    def ban(self, jail: str, *ips: str) -> None:
        """One synchronous `set JAIL banip IP…`: the bans are in memory when it returns."""
        self.client("set", jail, "banip", *ips)

    def banned(self) -> dict[str, list[str]]:
        out = self.client("banned").stdout
        # a Python literal, not JSON (pitfall 2)
        return {jail: ips for d in ast.literal_eval(out) for jail, ips in d.items()}

    def start(self, timeout: float = 30.0) -> None:
        if self.proc is not None:
            raise RuntimeError("fail2ban-server already started")
        env = {**os.environ, **self.server_env}
        with self.server_out.open("ab") as out:
            self.proc = subprocess.Popen(
                ["fail2ban-server", "-f", "-x", "-q", "-c", str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        want = f"Number of jail:\t{len(self.jails)}"
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                raise RuntimeError(f"fail2ban-server exited {rc} during start-up: {self._diagnostics()}")
            r = self.client("status", check=False)
            if r.returncode == 0 and want in r.stdout:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"fail2ban-server not ready after {timeout} s: {self._diagnostics()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop politely, then SIGTERM, then SIGKILL; always reaps the process."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                self.client("stop", check=False)
                proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill9(self) -> None:
        """Kill the server hard: socket and pid file stay behind (a stale socket)."""
        proc, self.proc = self.proc, None
        if proc is None:
            raise RuntimeError("fail2ban-server is not running")
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def _diagnostics(self) -> str:
        parts = []
        for path in (self.server_out, self.run / "fail2ban.log"):
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-10:]
                parts.append(f"{path}: " + " | ".join(tail))
        return "; ".join(parts) or "no output"


def require_fail2ban() -> None:
    """Fail (not skip): `make test` installs fail2ban, so a missing one means a broken setup."""
    missing = [exe for exe in ("fail2ban-server", "fail2ban-client") if shutil.which(exe) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found on PATH: install the Debian package "
            "(`make system-deps`, or apt-get install fail2ban)",
            pytrace=False,
        )


@contextmanager
def running_f2b(
    *, server_env: Mapping[str, str] | None = None, dbfile: str | None = None, extra_jails: int = 0
) -> Iterator[F2B]:
    """A started private server (e.g. server_env={"TZ": "Asia/Tokyo"}); stopped and removed on exit."""
    require_fail2ban()
    base = Path(tempfile.mkdtemp(prefix="f2b-", dir="/tmp"))
    srv = F2B(base, server_env=server_env, dbfile=dbfile, extra_jails=extra_jails)
    try:
        srv.write_config()
        srv.start()
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(base)


@pytest.fixture
def f2b() -> Iterator[F2B]:
    with running_f2b() as srv:
        yield srv
