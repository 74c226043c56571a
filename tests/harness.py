"""Runs the installed `reconcile` command against a private fail2ban-server and the Cloudflare emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.cf_emulator import TOKEN, ZONE_ID, CloudflareEmulator
from tests.f2b_server import F2B

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

    @property
    def token_file(self) -> Path:
        return self.workdir / "API_TOKEN"

    def config(self, **sections: Mapping[str, Any]) -> Path:
        """Write the config; `sections` override or extend the defaults, e.g. policy={"host_id": "web2"}."""
        base: dict[str, dict[str, Any]] = {
            "fail2ban": {"command": self.f2b.command, "timeout": 15},
            "cloudflare": {
                "api_base_url": self.cf.base_url,
                "api_token_file": str(self.token_file),
                "zone_ids": [ZONE_ID],
                "requests_per_minute": 60000,
                "timeout": 5,
            },
            "policy": {"host_id": "web1"},
            "run": {"lock_file": str(self.workdir / "reconcile.lock")},
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

    def run(
        self,
        *args: str,
        config: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        environ.update(env or {})
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

    def rules(self) -> dict[str, dict[str, Any]]:
        """The zone's rules by IP value."""
        return {r["configuration"]["value"]: r for r in self.cf.rules("zone", ZONE_ID)}


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
