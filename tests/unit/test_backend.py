"""The run over the backend seam, with the in-memory fake backend: apply's results, exit codes, renderers.

No fail2ban server and no HTTP: `execute(read=..., backend_factory=...)` takes a fail2ban state and the fake.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconcile import config as config_mod
from reconcile import run as run_module
from reconcile.cloudflare.credentials import Credentials
from reconcile.config import Config
from reconcile.core import render, report_json
from reconcile.core.applied import Result
from reconcile.core.changes import Action
from reconcile.core.merge import merge as core_merge
from reconcile.core.model import Ban, BanEntry, Fail2banState, RuleListing
from reconcile.errors import EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL, CloudflareError, ConfigError
from reconcile.run import Options, Outcome, execute, exit_code
from tests.support.fake_backend import FakeBackend

NOW = datetime.now(UTC).replace(microsecond=0)
IPS = ("45.155.205.1", "45.155.205.2", "45.155.205.3")


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


def run(tmp_path: Path, fake: FakeBackend, *ips: str, report: bool = False) -> Outcome:
    return execute(
        config(tmp_path),
        Credentials(token="t"),
        Options(report=report),
        read=lambda _config: state(*ips),
        backend_factory=lambda *_: fake,
    )


def test_adds_then_a_second_run_writes_nothing(tmp_path: Path) -> None:
    fake = FakeBackend()
    first = run(tmp_path, fake, *IPS)
    assert first.exit_code == EXIT_OK and set(fake.rules) == set(IPS)
    assert first.applied is not None and first.applied.count(Result.DONE, Action.ADD) == 3
    assert first.plan is not None
    assert render.summary(first.plan, first.stats, first.applied).startswith("3 added, 0 renewed, 0 expired")
    assert first.stats.requests == 4  # one listing, three writes: the backend's own count
    second = run(tmp_path, fake, *IPS)
    assert second.exit_code == EXIT_OK and second.plan is not None
    assert second.plan.writes() == [] and second.plan.count(Action.KEEP) == 3


def test_unbanned_rule_expires(tmp_path: Path) -> None:
    fake = FakeBackend()
    run(tmp_path, fake, *IPS)
    outcome = run(tmp_path, fake, *IPS[:2])
    assert outcome.exit_code == EXIT_OK and set(fake.rules) == set(IPS[:2])


def test_a_failed_write_is_exit_1_and_named_in_the_report(tmp_path: Path) -> None:
    fake = FakeBackend(fail=frozenset({IPS[1]}))
    outcome = run(tmp_path, fake, *IPS)
    assert outcome.exit_code == EXIT_FAILURE
    assert outcome.applied is not None and outcome.applied.count(Result.FAILED) == 1
    assert outcome.plan is not None
    assert "1 failed" in render.summary(outcome.plan, outcome.stats, outcome.applied)
    assert '"error": "POST /fake -> HTTP 400: refused"' in report_json.to_json(
        outcome.plan, outcome.now, outcome.stats, applied=outcome.applied
    )
    assert "[failed]" in render.table(outcome.plan, outcome.now, outcome.applied)


def test_a_429_is_exit_4_with_the_rest_pending(tmp_path: Path) -> None:
    fake = FakeBackend(rate_limit_after=2)  # the listing and one write
    outcome = run(tmp_path, fake, *IPS)
    assert outcome.exit_code == EXIT_PARTIAL and outcome.stats.rate_limited == 1
    assert outcome.applied is not None and outcome.applied.count(Result.PENDING) == 2
    assert outcome.plan is not None
    assert "2 pending for the next run" in render.summary(outcome.plan, outcome.stats, outcome.applied)


def test_an_unenforced_zone_fails_the_run_after_the_sync(tmp_path: Path) -> None:
    fake = FakeBackend(unenforced=("zone Z: no rule (ip.src in $fail2ban) with action block",))
    outcome = run(tmp_path, fake, *IPS)
    assert set(fake.rules) == set(IPS)  # synced all the same
    assert outcome.unenforced == fake.unenforced
    assert exit_code(outcome) == EXIT_FAILURE


def test_a_report_writes_nothing_and_asks_no_enforcement(tmp_path: Path) -> None:
    fake = FakeBackend(unenforced=("never asked",))
    outcome = run(tmp_path, fake, *IPS, report=True)
    assert fake.rules == {} and outcome.applied is None and outcome.exit_code == EXIT_OK
    assert fake.read_only == [True]  # and the backend was told to create nothing to list
    run(tmp_path, fake, *IPS)
    assert fake.read_only == [True, False]


def test_the_listing_runs_in_the_callers_thread_while_the_entries_are_merged(tmp_path: Path) -> None:
    """Cloudflare's listing (pages of waiting) stays in the run's own thread, where Ctrl-C stops it at
    once; the merge (bounded CPU) is what runs alongside, in a worker."""
    fake = FakeBackend()
    listed_in: list[threading.Thread] = []
    merged_in: list[threading.Thread] = []
    listings = fake.listings

    def listing(*, read_only: bool = False) -> list[RuleListing]:
        listed_in.append(threading.current_thread())
        return listings(read_only=read_only)

    def merging(entries: Iterable[BanEntry]) -> tuple[list[Ban], list[BanEntry]]:
        merged_in.append(threading.current_thread())
        return core_merge(entries)

    fake.listings = listing  # type: ignore[method-assign]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_module, "merge", merging)
        outcome = run(tmp_path, fake, *IPS, report=True)
    assert outcome.exit_code == EXIT_OK and outcome.plan is not None and len(outcome.plan.changes) == 3
    assert listed_in == [threading.current_thread()]
    assert len(merged_in) == 1 and merged_in[0] is not threading.current_thread()


def test_a_failed_listing_is_the_runs_error_and_the_merge_still_speaks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeBackend()

    def refused(*, read_only: bool = False) -> list[RuleListing]:
        path = "/zones/x/firewall/access_rules/rules"
        raise CloudflareError("Authentication error", method="GET", path=path, status=403)

    fake.listings = refused  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="reconcile"):
        outcome = run(tmp_path, fake, "45.155.205.1", "not-an-ip")
    assert outcome.exit_code == EXIT_FAILURE and outcome.plan is None and fake.rules == {}
    assert isinstance(outcome.error, CloudflareError) and "HTTP 403" in str(outcome.error)
    assert "skipping 'not-an-ip' banned in sshd" in caplog.text


# --- [cloudflare] backend keys ----------------------------------------------------------------------------

ACCOUNT = "01a7362d577a6c3019a474fd6f485823"
ZONE = "023e105f4ecef8ad9ca31a8372d0c353"


def load(tmp_path: Path, **cloudflare: object) -> Config:
    return config_mod.from_mapping(
        {"cloudflare": cloudflare},
        tmp_path / "c.toml",
        zone_id_reader=lambda path: (_ for _ in ()).throw(FileNotFoundError(path)),
    )


def test_backend_defaults(tmp_path: Path) -> None:
    cfg = load(tmp_path, zone_ids=[ZONE])
    assert (
        cfg.cloudflare.backend,
        cfg.cloudflare.list_name,
        cfg.cloudflare.list_capacity,
        cfg.cloudflare.waf_rule,
    ) == (
        "rules",
        "fail2ban",
        10000,
        "check",
    )


def test_the_list_backend_takes_account_id_and_zone_ids_together(tmp_path: Path) -> None:
    cfg = load(tmp_path, backend="list", account_id=ACCOUNT, zone_ids=[ZONE], list_capacity=50)
    assert (cfg.cloudflare.account_id, cfg.cloudflare.zone_ids, cfg.cloudflare.list_capacity) == (
        ACCOUNT,
        (ZONE,),
        50,
    )
    off = load(tmp_path, backend="list", account_id=ACCOUNT, waf_rule="off")
    assert off.cloudflare.zone_ids == ()


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"backend": "lists", "zone_ids": [ZONE]}, "[cloudflare] backend: must be one of rules, list"),
        ({"backend": "list", "zone_ids": [ZONE]}, '[cloudflare] account_id: required with backend = "list"'),
        ({"backend": "list", "account_id": ACCOUNT}, "[cloudflare] zone_ids: no zone for the WAF rule"),
        (
            {"account_id": ACCOUNT, "zone_ids": [ZONE]},
            "[cloudflare] zone_ids: set either zone_ids or account_id",
        ),
        ({"zone_ids": [ZONE], "list_name": "Fail2ban"}, "[cloudflare] list_name: 'Fail2ban' must be 1-50"),
        ({"zone_ids": [ZONE], "list_name": "x" * 51}, "[cloudflare] list_name"),
        ({"zone_ids": [ZONE], "list_name": "fail2ban\n"}, "[cloudflare] list_name"),
        ({"zone_ids": [ZONE], "list_capacity": 0}, "[cloudflare] list_capacity: must be greater than zero"),
        (
            {"zone_ids": [ZONE], "list_capacity": 2_000_000},
            "[cloudflare] list_capacity: 2000000 is too large",
        ),
        ({"zone_ids": [ZONE], "list_capacity": 1.5}, "[cloudflare] list_capacity: must be a whole number"),
        ({"zone_ids": [ZONE], "waf_rule": "add"}, "[cloudflare] waf_rule: must be one of check, create, off"),
    ],
)
def test_bad_backend_keys_are_exit_2_naming_the_key(
    tmp_path: Path, keys: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, **keys)
    assert message in str(raised.value) and raised.value.exit_code == 2
