"""reconcile.fail2ban against a real private fail2ban-server, and every way a call can fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconcile.errors import Fail2banError
from reconcile.fail2ban.client import run_client
from tests.support.f2b_server import require_fail2ban

TIMEOUT = 30.0


# --- against the real server ------------------------------------------------------------------------------


# --- the restore witness ------------------------------------------------------------------------------------


def test_missing_fail2ban_fails_loudly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # a silent skip would hide a broken setup: `make test` installs fail2ban
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match=r"fail2ban-server, fail2ban-client not found on PATH"):
        require_fail2ban()


# --- failures that need no server -----------------------------------------------------------------------


def test_empty_command() -> None:
    with pytest.raises(Fail2banError, match=r"command is empty"):
        run_client([], ["status"], TIMEOUT)
