"""Runs the installed `reconcile` command against a private fail2ban-server and the Cloudflare emulator."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from reconcile import config as config_mod
from reconcile.cloudflare import credentials
from reconcile.cloudflare.credentials import Credentials
from reconcile.cloudflare.open import make_client
from reconcile.cloudflare.pacing import Pacer
from reconcile.cloudflare.rules import Client
from reconcile.config import Config
from reconcile.core.model import Fail2banState
from reconcile.fail2ban.state import read_configured
from reconcile.run import Options, Outcome, execute
from tests.support.cf_emulator import ACCOUNT_ID, TOKEN, ZONE_ID, CloudflareEmulator
from tests.support.f2b_server import F2B

RECONCILE = Path(sys.executable).with_name("reconcile")
# Variables that would let the command find a secret or a config the test did not give it.
_SCRUBBED = (
    "CLOUDFLARE_API_TOKEN",
    "CLOUDFLARE_API_KEY",
    "CLOUDFLARE_EMAIL",
    "CREDENTIALS_DIRECTORY",
    "JOURNAL_STREAM",
)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


@dataclass
class Harness:
    f2b: F2B
    cf: CloudflareEmulator
    workdir: Path
    outputs: list[str] = field(default_factory=list)  # every stdout and stderr, for the token check
    # How `execute` reads fail2ban (run.execute's `read` seam); None: for real, through the config's command
    read: Callable[[Config], Fail2banState] | None = None

    @property
    def token_file(self) -> Path:
        return self.workdir / "API_TOKEN"

    def config(self, **sections: Mapping[str, Any]) -> Path:
        """Write the config; `sections` override or extend the defaults, e.g. policy={"host_id": "web2"}."""
        # Timeouts and the run's time limit far above what a run needs: on a loaded machine the emulator's
        # 1,000-rule answer once took over 5 s. Tests of timeouts and limits set their own.
        base: dict[str, dict[str, Any]] = {
            "fail2ban": {"command": self.f2b.command, "timeout": 60},
            "cloudflare": {
                "api_base_url": self.cf.base_url,
                "api_token_file": str(self.token_file),
                "zone_ids": [ZONE_ID],
                "requests_per_minute": 60000,
                "timeout": 60,
            },
            "policy": {"host_id": "web1"},
            "run": {"lock_file": str(self.workdir / "reconcile.lock"), "max_seconds": 300},
        }
        for name, values in sections.items():
            base.setdefault(name, {}).update(values)
        lines = []
        for name, values in base.items():
            lines.append(f"[{name}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
        path = self.workdir / "reconcile.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def environ(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The command's environment: this one without credentials the test did not give, plus `env`."""
        environ = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        # The command starts hundreds of times: let Python keep its bytecode (reconcile/__pycache__, git
        # ignores it) even where the environment says not to, or every run compiles the package anew.
        environ.pop("PYTHONDONTWRITEBYTECODE", None)
        environ.update(env or {})
        return environ

    def run(
        self,
        *args: str,
        config: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        environ = self.environ(env)
        config = config or self.workdir / "reconcile.toml"
        if not config.exists():
            config = self.config()
        result = subprocess.run(
            [str(RECONCILE), "--config", str(config), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=environ,
        )
        self.outputs += [result.stdout, result.stderr]
        return result

    def list_config(self, **sections: Mapping[str, Any]) -> Path:
        """The config with `backend = "list"` on the emulator's account, the WAF rule checked in ZONE_ID."""
        cloudflare = {"backend": "list", "account_id": ACCOUNT_ID, "zone_ids": [ZONE_ID]}
        cloudflare.update(sections.pop("cloudflare", {}))
        return self.config(cloudflare=cloudflare, **sections)

    def items(self, name: str = "fail2ban") -> dict[str, dict[str, Any]]:
        """The items of the account's list `name` by `ip` ({} when there is no such list)."""
        for found in self.cf.lists(ACCOUNT_ID):
            if found["name"] == name:
                return {item["ip"]: item for item in self.cf.items(found["id"], account_id=ACCOUNT_ID)}
        return {}

    def rules(self) -> dict[str, dict[str, Any]]:
        """The zone's rules by IP value."""
        return {r["configuration"]["value"]: r for r in self.cf.rules("zone", ZONE_ID)}

    def execute(
        self,
        config: Path | None = None,
        *,
        force: bool = False,
        per_page: int = 1000,
        session: requests.Session | None = None,
        pacer: Pacer | None = None,
    ) -> Outcome:
        """One run inside this process: run.execute with the real fail2ban-server and the emulator.

        Skips the CLI (lock, rendering); `per_page` and `session` reach the product's Client through
        execute's client_factory, and backoff does not sleep. Much cheaper than `run` per case.
        """
        config = config or self.workdir / "reconcile.toml"
        if not config.exists():
            config = self.config()
        loaded = config_mod.load(config)
        creds = credentials.load(loaded, environ={})
        return execute(
            loaded,
            creds,
            Options(force=force),
            pacer=pacer,
            client_factory=client_factory(per_page=per_page, session=session),
            read=self.read or read_configured,
        )


def no_sleep(seconds: float) -> None:
    """Backoff without waiting: retries are counted, not slept through."""


def client_factory(
    *,
    per_page: int = 1000,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = no_sleep,
) -> Callable[[Config, Credentials, Pacer], Client]:
    """run.execute's client_factory with test-sized pages (the product always lists 1000 per page)."""

    def make(config: Config, creds: Credentials, pacer: Pacer) -> Client:
        return make_client(config, creds, pacer, sleep=sleep, per_page=per_page, session=session)

    return make


# Where a fault can hit a run, and the method of the request it hits there.
FAULT_STEPS = {
    "first page": "GET",
    "later page": "GET",
    "create": "POST",
    "renew": "PATCH",
    "delete": "DELETE",
}


def inject_at(cf: CloudflareEmulator, kind: str, step: str, count: int, delay: float = 30.0) -> None:
    """The next `count` requests of a step get fault `kind`.

    `delay` only matters for "delay" and "late": they answer once the client gave up, at the latest then.
    """
    page = 2 if step == "later page" else None  # by page: pages after the first may go out together
    wait = delay if kind in ("delay", "late") else 0.0
    cf.inject(kind, method=FAULT_STEPS[step], count=count, delay=wait, page=page)


def clear_faults(cf: CloudflareEmulator) -> None:
    cf.clear_faults()


class CountingSession(requests.Session):
    """Counts the attempts a client sends through it, timed-out and reset ones included."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        self.sent += 1
        return super().request(*args, **kwargs)


def wait_for_requests(cf: CloudflareEmulator, count: int, timeout: float = 15.0) -> None:
    """Poll until the emulator has logged `count` requests since its log was cleared.

    A "delay" fault is carried out (and logged) once the client gave up, so a run can end before its
    last request lands; checks of the emulator's state wait for that here.
    """
    deadline = time.monotonic() + timeout
    while len(cf.requests) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"emulator logged {len(cf.requests)} of {count} requests after {timeout} s")
        time.sleep(0.01)


def requests_made(stderr: str) -> int:
    """The API request count from the command's summary line ("... 12 API requests in 0.3 s")."""
    found = re.findall(r"(\d+) API requests? in ", stderr)
    assert found, f"no summary line in: {stderr}"
    return int(found[-1])


class _ListHandler(logging.Handler):
    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def captured_logs(level: int = logging.INFO) -> Iterator[list[logging.LogRecord]]:
    """Records of the `reconcile` logger during an in-process run, whatever the CLI set up before."""
    logger = logging.getLogger("reconcile")
    handler = _ListHandler(level)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def make_harness(f2b: F2B, cf: CloudflareEmulator, tmp_path: Path) -> Iterator[Harness]:
    assert RECONCILE.exists(), f"{RECONCILE} missing: install the package (make venv)"
    workdir = tmp_path / "work"
    workdir.mkdir()
    token_file = workdir / "API_TOKEN"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    h = Harness(f2b, cf, workdir)
    yield h
    for text in h.outputs:
        assert TOKEN not in text, "the API token appeared in reconcile's output"


@pytest.fixture
def harness(f2b: F2B, cf: CloudflareEmulator, tmp_path: Path) -> Iterator[Harness]:
    yield from make_harness(f2b, cf, tmp_path)
