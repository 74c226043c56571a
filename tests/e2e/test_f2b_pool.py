"""The `f2b` fixture hands one fail2ban-server from test to test (tests/support/f2b_server.py): proof that a
reset server is indistinguishable from a new one, and that a server a test changed is never handed on."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.support.f2b_server import F2B, ServerPool, db_rows, running_f2b

pytestmark = pytest.mark.fail2ban

# A ban in every jail: IPv4 and IPv6, the permanent jail, the bantime.increment jail, a log-less recidive.
BANS = {
    "sshd": ("45.155.205.1", "2a06:4880:1::1"),
    "nginx-limit-req": ("45.155.205.1", "45.155.205.2"),
    "nginx-http-auth": ("45.155.205.3",),
    "recidive": ("45.155.205.4",),
    "manual": ("45.155.205.5",),
}


def seed(srv: F2B) -> None:
    for jail, ips in BANS.items():
        srv.ban(jail, *ips)


def observed(srv: F2B) -> dict[str, object]:
    """What a test or reconcile can read of a server's bans and jails (fail2ban's counters aside)."""
    with_time = {}
    for jail in srv.jails:
        lines = srv.request("get", jail, "banip", "--with-time")
        # the dates differ from server to server; the address and the ban's length must not
        with_time[jail] = [re.sub(r"\t.* \+ (-?\d+) = .*", r" + \1", line) for line in lines]
    # each server's own paths (its watched logs) read the same
    status = {jail: repr(srv.request("status", jail)).replace(str(srv.base), "BASE") for jail in srv.jails}
    return {
        "status": srv.request("status"),
        # "Total banned" counts every ban since the start: the one number a reset does not set back
        # (neither reconcile nor any test reads it)
        "jail status": {j: re.sub(r"'Total banned', \d+", "'Total banned', N", s) for j, s in status.items()},
        "banned": srv.banned(),
        "with time": with_time,
        "database": db_rows(srv),
        "bantime": {jail: srv.request("get", jail, "bantime") for jail in srv.jails},
    }


def test_a_reset_server_is_indistinguishable_from_a_new_one() -> None:
    pool = ServerPool()
    try:
        with pool.server() as used:
            seed(used)
            # the same bans again: a re-ban extends, and bantime.increment remembers a ban count
            seed(used)
            first_proc = used.proc
            assert used.banned()["manual"] == ["45.155.205.5"] and db_rows(used)["bips"] == 7
        with pool.server() as reset, running_f2b() as new:
            assert reset is used and reset.proc is first_proc  # handed on, not restarted
            assert observed(reset) == observed(new)
            # and they go on alike: the same bans give the same lengths (no increment history)
            seed(reset)
            seed(new)
            assert observed(reset) == observed(new)
            # a restart restores the same (nothing from before the reset comes back)
            for srv in (reset, new):
                srv.client("unban", "45.155.205.1")
                srv.stop()
                srv.start()
                srv.client("ping")
            assert wait_restored(reset) == wait_restored(new)
        assert pool.started == 1
    finally:
        pool.close()


def wait_restored(srv: F2B) -> dict[str, list[str]]:
    """The bans once the restore from the database has finished (it is asynchronous)."""
    want = {j: sorted(ip for ip in ips if ip != "45.155.205.1") for j, ips in BANS.items()}
    deadline = time.monotonic() + 30
    while (now := {j: sorted(ips) for j, ips in srv.banned().items() if ips}) != want:
        assert time.monotonic() < deadline, f"{now} != {want}"
        time.sleep(0.05)
    return now


@pytest.mark.parametrize(
    "change",
    ["stop", "kill", "restart", "stop a jail", "set bantime", "reload a changed jail", "log line"],
)
def test_a_server_a_test_changed_is_not_handed_on(change: str) -> None:
    pool = ServerPool()
    try:
        with pool.server() as srv:
            srv.ban("sshd", "45.155.205.1")
            if change == "stop":
                srv.stop()
            elif change == "kill":
                srv.kill9()
            elif change == "restart":
                srv.stop()
                srv.start()
            elif change == "stop a jail":
                srv.client("stop", "recidive")
            elif change == "set bantime":
                srv.client("set", "sshd", "bantime", "60")
            elif change == "reload a changed jail":
                (srv.conf / "jail.local").write_text("[sshd]\nbantime = 60\n")
                srv.client("reload", "sshd")
            else:
                with (srv.log / "auth.log").open("a") as log:
                    log.write("Failed password for root from 45.155.205.9 port 22 ssh2\n")
            base = srv.base
        assert srv.proc is None and not base.exists()  # stopped and removed at once
        with pool.server() as fresh:
            assert fresh is not srv and fresh.banned()["sshd"] == []
        assert pool.started == 2
    finally:
        pool.close()
    assert not Path(fresh.base).exists()


def test_the_fixture_hands_on_one_server(f2b_pool: ServerPool, f2b: F2B) -> None:
    """Within one process the `f2b` fixture's server comes from the session's pool, with no ban."""
    assert all(not ips for ips in f2b.banned().values()) and not any(db_rows(f2b).values())
    with f2b_pool.server() as second:  # e.g. a second host: another server, as clean
        assert second is not f2b and all(not ips for ips in second.banned().values())
