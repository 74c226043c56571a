"""A ban fail2ban stores while a kicked run lists and writes reaches the edge in that same run (issue 18).

systemd merges a kick that arrives while the oneshot is active into it, so such a ban used to wait for
the timer. Here a real fail2ban bans the second address right after the run has read it (the run's read
seam is the hook), against the emulator, with each backend.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from reconcile.config import Config
from reconcile.core.applied import Result
from reconcile.core.changes import Action
from reconcile.core.model import Fail2banState
from reconcile.errors import EXIT_OK
from reconcile.fail2ban.state import read_configured
from tests.support.harness import Harness

pytestmark = [pytest.mark.fail2ban]

FIRST, LATER = "45.155.205.1", "2a06:4880:1:2::7"


def banning_after_the_first_read(harness: Harness) -> tuple[Callable[[Config], Fail2banState], list[int]]:
    reads = [0]

    def read(config: Config) -> Fail2banState:
        found = read_configured(config)
        reads[0] += 1
        if reads[0] == 1:  # fail2ban bans LATER once the run has read it, before the run lists and writes
            harness.f2b.ban("sshd", LATER)
        return found

    return read, reads


@pytest.mark.parametrize("backend", ["rules", "list"])
def test_a_ban_stored_after_the_read_reaches_the_edge_in_the_same_run(harness: Harness, backend: str) -> None:
    harness.f2b.ban("sshd", FIRST)
    if backend == "list":
        harness.list_config(cloudflare={"waf_rule": "create"})
    else:
        harness.config()
    harness.read, reads = banning_after_the_first_read(harness)
    outcome = harness.execute()
    assert reads[0] == 2 and outcome.exit_code == EXIT_OK, outcome.error
    held = set(harness.items()) if backend == "list" else set(harness.rules())
    assert held == {FIRST, LATER if backend == "rules" else "2a06:4880:1:2::/64"}
    assert outcome.applied is not None and outcome.applied.count(Result.DONE, Action.ADD) == 2
    assert outcome.plan is not None and outcome.plan.count(Action.ADD) == 2
    assert harness.cf.violations == []
    # The next run finds both as written: nothing to do, and nothing written twice.
    harness.cf.clear_log()
    harness.read = None
    again = harness.execute()
    assert again.plan is not None and again.plan.writes() == [] and harness.cf.writes() == []
