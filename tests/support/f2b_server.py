"""A real, private fail2ban-server for tests (fail2ban-facts.md §13).

Foreground server under Popen in a short /tmp/f2b-XXXX dir (AF_UNIX paths must stay under 108 bytes),
five jails with no-op actions, so no firewall is touched. No process and no directory is left behind.

The `f2b` fixture hands a started server with no ban to each test. Starting one costs about a second on a
loaded machine, so a server is handed on from test to test within a pytest process (one per xdist worker):
after each test `unban --all` empties its bans and its database (fail2ban-facts §9), and it is handed on
only if the test left nothing else behind (ServerPool._leftover; tests/e2e/test_f2b_pool.py proves a reset
server looks like a new one). A test may stop, kill, restart or reconfigure its server all the same: that
server is then stopped and removed, and the next test gets a new one. Servers with another environment,
database or extra jails come from `running_f2b` and are never shared.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
        # client commands that may have changed more than bans (ServerPool: not handed on after them)
        self.changes: list[str] = []

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
        if not _only_bans(args):
            self.changes.append(" ".join(args))
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

    def request(self, *command: str, timeout: float = CLIENT_TIMEOUT) -> Any:
        """One command over the server's socket, as fail2ban-client sends it (fail2ban-facts §11): the value
        of the reply; RuntimeError for an error reply.

        For the tests' own seeding and checks: no Python start-up per call (fail2ban-client costs ~0.1 s of
        CPU each, and a loaded 2-core machine runs thousands). What reconcile runs is always the real
        fail2ban-client; `client` is for output a test reads as fail2ban-client prints it.
        """
        if not _only_bans(command):
            self.changes.append(" ".join(command))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            _connect(sock, str(self.sock), timeout)
            sock.sendall(pickle.dumps(list(command), pickle.HIGHEST_PROTOCOL) + _END)
            reply = b""
            while not reply.endswith(_END):
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"fail2ban-server closed the connection: {' '.join(command)}")
                reply += chunk
            with contextlib.suppress(OSError):
                sock.sendall(_CLOSE + _END)
        code, value = _Unpickler(io.BytesIO(reply[: -len(_END)])).load()
        if code != 0:
            raise RuntimeError(f"fail2ban-server: {' '.join(command)} -> {value!r}")
        return value

    def ban(self, jail: str, *ips: str) -> None:
        """One `set JAIL banip IP…`; when it returns the bans are in memory and in the database.

        fail2ban answers once the bans are in memory and stores them a moment later (fail2ban-facts §8):
        a test that reads the database, or kills the server, right after a ban must find them there.
        """
        self.request("set", jail, "banip", *ips)
        if not Path(self.dbfile).is_file():  # "None" or ":memory:": nothing to wait for
            return
        deadline = time.monotonic() + 10
        while not set(self.request("get", jail, "banip")) <= {ip for j, ip in stored_bans(self) if j == jail}:
            if time.monotonic() > deadline:
                raise AssertionError(f"bans of {jail} not in fail2ban's database after 10 s")
            time.sleep(0.005)

    def banned(self) -> dict[str, list[str]]:
        """Every jail's banned addresses (`banned`)."""
        return {jail: list(ips) for d in self.request("banned") for jail, ips in d.items()}

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
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                raise RuntimeError(f"fail2ban-server exited {rc} during start-up: {self._diagnostics()}")
            if self._jail_count() == len(self.jails):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"fail2ban-server not ready after {timeout} s: {self._diagnostics()}")
            time.sleep(0.02)

    def _jail_count(self) -> int | None:
        """`status`'s jail count once the server answers (None before; a stale socket refuses)."""
        try:
            status = dict(self.request("status", timeout=5))
        except (OSError, RuntimeError):
            return None
        count = status.get("Number of jail")
        return count if isinstance(count, int) else None

    def stop(self) -> None:
        """Stop politely, then SIGTERM, then SIGKILL; always reaps the process."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                with contextlib.suppress(OSError, RuntimeError):
                    self.request("stop", timeout=15)
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


# fail2ban's socket protocol (fail2ban-facts §11): pickled lists of strings, each message ends with _END.
_END = b"<F2B_END_COMMAND>"
_CLOSE = b"<F2B_CLOSE_COMMAND>"


class _Unpickler(pickle.Unpickler):
    """Error replies are pickled fail2ban exceptions: any fail2ban.* class becomes a plain stand-in."""

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("fail2ban"):
            return type(name, (Exception,), {"__module__": module})
        return super().find_class(module, name)


def _only_bans(args: tuple[str, ...]) -> bool:
    """Commands that read, or change nothing but bans: `unban --all` makes a server new again after them."""
    if not args:
        return False
    if args[0] in ("banned", "get", "ping", "status", "unban"):
        return True
    return args[0] == "set" and len(args) >= 3 and args[2] in ("banip", "unbanip")


def _files(*dirs: Path) -> dict[str, tuple[int, int]]:
    """Every file under `dirs` with its size and mtime: the server's configuration and watched logs."""
    return {
        str(path): (path.stat().st_size, path.stat().st_mtime_ns)
        for d in dirs
        for path in sorted(d.rglob("*"))
        if path.is_file()
    }


def db_rows(srv: F2B) -> dict[str, int]:
    """Rows of the server's database tables that hold bans (a short read-only query, fail2ban-facts §8)."""
    with contextlib.closing(sqlite3.connect(f"file:{srv.dbfile}?mode=ro", uri=True, timeout=5)) as db:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("bans", "bips")}


def _connect(sock: socket.socket, path: str, timeout: float) -> None:
    """Connect to the server's socket, again while its queue of connections is full: a busy server (a run
    reading 10,000 bans) answers EAGAIN at once, where fail2ban-client would wait."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock.connect(path)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def stored_bans(srv: F2B) -> set[tuple[str, str]]:
    """(jail, address) of every ban in the server's database (`bips`, current or not)."""
    with contextlib.closing(sqlite3.connect(f"file:{srv.dbfile}?mode=ro", uri=True, timeout=5)) as db:
        return {(jail, ip) for jail, ip in db.execute("SELECT jail, ip FROM bips")}


class ServerPool:
    """Servers handed on from test to test in this process; see the module docstring."""

    def __init__(self) -> None:
        self._idle: list[tuple[F2B, dict[str, tuple[int, int]]]] = []
        self.started = 0  # servers started so far (tests/e2e/test_f2b_pool.py counts them)

    @contextmanager
    def server(self) -> Iterator[F2B]:
        """A started server with no ban: a reset one when there is one, else a new one."""
        if self._idle:
            srv, files = self._idle.pop()
        else:
            require_fail2ban()
            srv = F2B(Path(tempfile.mkdtemp(prefix="f2b-", dir="/tmp")))
            try:
                srv.write_config()
                srv.start()
            except BaseException:
                _remove(srv)
                raise
            self.started += 1
            files = _files(srv.conf, srv.log)
        proc, srv.changes = srv.proc, []
        try:
            yield srv
        finally:
            if self._leftover(srv, proc, files) is None:
                self._idle.append((srv, files))
            else:
                _remove(srv)

    def _leftover(
        self, srv: F2B, proc: subprocess.Popen[bytes] | None, files: dict[str, tuple[int, int]]
    ) -> str | None:
        """Why `srv` cannot be handed on after a test (None: it has been reset to a new server's state)."""
        if srv.proc is None or srv.proc is not proc or proc.poll() is not None:
            return "stopped, killed or restarted"
        if srv.changes:
            return f"changed by fail2ban-client {srv.changes[0]}"
        if _files(srv.conf, srv.log) != files:
            return "its configuration or a watched log changed"
        try:
            srv.request("unban", "--all")
        except (OSError, RuntimeError) as exc:
            return f"unban --all failed: {exc}"
        banned = srv.banned()
        if sorted(banned) != list(srv.jails) or any(banned.values()):
            return f"jails or bans left after unban --all: {banned}"
        # The database follows the unbans within milliseconds (fail2ban-facts §8): a restart must not
        # bring any ban back, nor may reconcile's restore check find one.
        deadline = time.monotonic() + 5
        while any(db_rows(srv).values()):
            if time.monotonic() > deadline:
                return f"bans left in the database: {db_rows(srv)}"
            time.sleep(0.02)
        return None

    def close(self) -> None:
        while self._idle:
            _remove(self._idle.pop()[0])


def _remove(srv: F2B) -> None:
    srv.stop()
    shutil.rmtree(srv.base, ignore_errors=True)


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


@pytest.fixture(scope="session")
def f2b_pool() -> Iterator[ServerPool]:
    """The servers of this pytest process (of this xdist worker); all stopped and removed at its end."""
    pool = ServerPool()
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def f2b(f2b_pool: ServerPool) -> Iterator[F2B]:
    """A started server with no ban, this test's alone (handed on afterwards only if reset)."""
    with f2b_pool.server() as srv:
        yield srv
