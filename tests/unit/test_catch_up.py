"""A ban that fail2ban stores while a run lists and writes reaches the edge in that run (issue 18).

The run reads fail2ban again after applying and adds what is new; adds only, nothing for values its own
plan touched, and nothing at all for a read-only run, a refused plan or a run that stopped early. The
fake backend and a scripted fail2ban (one state per read) stand in for the edges.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconcile import config as config_mod
from reconcile.cloudflare.credentials import Credentials
from reconcile.config import Config
from reconcile.core import render
from reconcile.core.applied import Result
from reconcile.core.changes import Action
from reconcile.core.model import BanEntry, Fail2banState, Rule
from reconcile.errors import EXIT_OK, EXIT_PARTIAL, EXIT_UNSAFE, Fail2banError
from reconcile.run import Options, Outcome, execute
from tests.support.fake_backend import SCOPE, FakeBackend

NOW = datetime.now(UTC).replace(microsecond=0)
A, B, C = "45.155.205.1", "45.155.205.2", "45.155.205.3"
TAG = "Blocked by fail2ban"


def config(tmp_path: Path) -> Config:
    return config_mod.from_mapping(
        {"cloudflare": {"zone_ids": ["023e105f4ecef8ad9ca31a8372d0c353"]}, "policy": {"host_id": "web1"}},
        tmp_path / "c.toml",
    )


def state(*ips: str) -> Fail2banState:
    entries = tuple(
        BanEntry("sshd", ip, NOW - timedelta(minutes=i), NOW + timedelta(hours=1)) for i, ip in enumerate(ips)
    )
    return Fail2banState(("sshd",), entries)


def reads(*states: Fail2banState | Exception) -> tuple[Callable[[Config], Fail2banState], list[int]]:
    """fail2ban as read once per call: the given states in turn, the last one repeated."""
    count = [0]

    def read(_config: Config) -> Fail2banState:
        found = states[min(count[0], len(states) - 1)]
        count[0] += 1
        if isinstance(found, Exception):
            raise found
        return found

    return read, count


def run(
    tmp_path: Path, fake: FakeBackend, read: Callable[[Config], Fail2banState], **options: bool
) -> Outcome:
    creds, options_ = Credentials(token="t"), Options(**options)
    return execute(config(tmp_path), creds, options_, read=read, backend_factory=lambda *_: fake)


def test_a_ban_stored_during_the_run_is_added_by_the_same_run(tmp_path: Path) -> None:
    fake = FakeBackend()
    read, count = reads(state(A), state(A, B))
    outcome = run(tmp_path, fake, read)
    assert count[0] == 2 and set(fake.rules) == {A, B}
    assert outcome.exit_code == EXIT_OK and outcome.applied is not None and outcome.plan is not None
    assert outcome.applied.count(Result.DONE, Action.ADD) == 2
    assert render.summary(outcome.plan, outcome.stats, outcome.applied).startswith("2 added, 0 renewed")
    assert outcome.stats.requests == 3  # one listing, two writes: the second pass lists nothing


def test_the_second_read_never_deletes_nor_touches_what_the_first_planned(tmp_path: Path) -> None:
    # B is this host's rule, no longer banned at the first read (expired); at the second read A is gone
    # (an incomplete read, or an unban) and B and C are banned: only C is added, A stays, B stays expired.
    note = f"{TAG} jail=sshd host=web1 since=2026-11-21T10:00:00Z until=2099-11-22T10:00:00Z"
    fake = FakeBackend(rules={B: Rule("1" * 32, SCOPE, "ip", B, "block", note, NOW)})
    read, count = reads(state(A), state(B, C))
    outcome = run(tmp_path, fake, read, force=True)  # expiring 1 of 1 rules would be refused otherwise
    assert count[0] == 2 and set(fake.rules) == {A, C}
    assert outcome.applied is not None
    assert [(w.change.action, w.change.value) for w in outcome.applied.outcomes] == [
        (Action.ADD, A),
        (Action.EXPIRE, B),
        (Action.ADD, C),
    ]


def test_nothing_new_is_one_more_read_and_no_request(tmp_path: Path) -> None:
    fake = FakeBackend(rules={C: Rule("2" * 32, SCOPE, "ip", C, "block", "an operator's block", NOW)})
    read, count = reads(state(A), state(A, C))  # C is new, but an untagged rule already covers it
    outcome = run(tmp_path, fake, read)
    assert count[0] == 2 and outcome.stats.requests == 2 and set(fake.rules) == {A, C}
    assert fake.rules[C].notes == "an operator's block"


def test_read_only_refused_and_stopped_runs_read_fail2ban_once(tmp_path: Path) -> None:
    read, count = reads(state(A), state(A, B))
    report = run(tmp_path, FakeBackend(), read, report=True)
    assert count[0] == 1 and report.applied is None

    note = f"{TAG} jail=sshd host=web1 since=2026-11-21T10:00:00Z until=2099-11-22T10:00:00Z"
    tens = [f"45.155.206.{i}" for i in range(1, 11)]  # ten of ours, none banned: expiring all is refused
    ours = {ip: Rule(f"{i:032x}", SCOPE, "ip", ip, "block", note, NOW) for i, ip in enumerate(tens)}
    read, count = reads(state(), state(A))
    refused = run(tmp_path, FakeBackend(rules=dict(ours)), read)
    assert refused.exit_code == EXIT_UNSAFE and count[0] == 1

    fake = FakeBackend(rate_limit_after=2)  # the listing and one write, then 429
    read, count = reads(state(A, B), state(A, B, C))
    stopped = run(tmp_path, fake, read)
    assert stopped.exit_code == EXIT_PARTIAL and count[0] == 1 and C not in fake.rules


def test_a_run_that_wrote_nothing_reads_fail2ban_once(tmp_path: Path) -> None:
    # Steady state: A's rule is in step; B arrives after the read. The run writes nothing, so it does not
    # pay for a second read (three fail2ban-client start-ups); B waits for the next kick or tick.
    fake = FakeBackend()
    read, _ = reads(state(A), state(A))
    assert run(tmp_path, fake, read).exit_code == EXIT_OK and set(fake.rules) == {A}
    read, count = reads(state(A), state(A, B))
    outcome = run(tmp_path, fake, read)
    assert outcome.exit_code == EXIT_OK and outcome.applied is not None and outcome.applied.outcomes == ()
    assert count[0] == 1 and set(fake.rules) == {A}


def test_a_failed_second_read_leaves_the_run_as_it_was(tmp_path: Path) -> None:
    fake = FakeBackend()
    read, count = reads(state(A), Fail2banError("fail2ban-client timed out"))
    outcome = run(tmp_path, fake, read)
    assert count[0] == 2 and outcome.exit_code == EXIT_OK and set(fake.rules) == {A}


def test_the_second_read_repeats_no_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    said = logging.getLogger("reconcile.fail2ban")
    states = iter((state(A), state(A, B)))

    def read(_config: Config) -> Fail2banState:
        said.warning("fail2ban's times are not in this machine's zone")
        return next(states)

    with caplog.at_level(logging.INFO):
        outcome = run(tmp_path, FakeBackend(), read)
    assert outcome.exit_code == EXIT_OK
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("fail2ban's times are not in this machine's zone") == 1
    assert said.level == logging.NOTSET  # left as it was
