"""The planner's and note parser's fast paths (issue 12) against the slow definitions they replace.

plan.Classifier answers `is_allowlisted` and the Cloudflare-range check by bisection; notes' format and
parse fast paths handle format_note's own shape. Each must agree with the plain definition for every input,
boundaries above all; fail2ban's concurrent jail reads keep the all-or-nothing rule.
"""

from __future__ import annotations

import sys
from datetime import UTC

import pytest

from reconcile.errors import Fail2banError
from reconcile.fail2ban.state import read_state

# --------------------------------------------------------------------------------------------- notes


# ---------------------------------------------------------------------------------- fail2ban reads


def _client(failing: str | None) -> list[str]:
    """A fake fail2ban-client with 6 jails; `failing` answers like a jail that vanished."""
    jails = [f"j{i}" for i in range(6)]
    body = (
        "import sys, time\n"
        "args = sys.argv[1:]\n"
        "if args == ['status']:\n"
        f"    print('Status\\n|- Number of jail:\\t6\\n`- Jail list:\\t{', '.join(jails)}')\n"
        "elif args == ['get', 'dbfile']:\n"
        "    print('Database currently disabled')\n"
        f"elif args[1] == {failing!r}:\n"
        "    print(f\"Sorry but the jail '{args[1]}' does not exist\"); sys.exit(255)\n"
        "else:\n"
        "    time.sleep(0.2)\n"
        "    n = int(args[1][1:])\n"
        "    print(f'45.155.205.{n} \\t2026-11-21 04:47:38 + -1 = 9999-12-31 23:59:59')\n"
    )
    return [sys.executable, "-c", body]


def test_concurrent_jail_reads_keep_jail_order() -> None:
    state = read_state(_client(None), [], 30, UTC)
    assert state.jails == tuple(f"j{i}" for i in range(6))
    assert [e.value for e in state.entries] == [f"45.155.205.{i}" for i in range(6)]


@pytest.mark.parametrize("failing", ["j0", "j4"])
def test_any_failed_jail_read_fails_the_whole_read(failing: str) -> None:
    with pytest.raises(Fail2banError, match=f"fail2ban jail '{failing}' does not exist"):
        read_state(_client(failing), [], 30, UTC)
