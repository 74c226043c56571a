"""What a run tells the operator when it stops early or is refused (issue 7 item 9), and allow rules
(issue 7 item 1), through the installed command against a real fail2ban and the emulator.
"""

from __future__ import annotations

import pytest

from tests.support.cf_emulator import ZONE_ID, ZONE_ID_2
from tests.support.harness import Harness, requests_made

pytestmark = [pytest.mark.fail2ban]

TAG = "Blocked by fail2ban"
ENDED = f"{TAG} jail=sshd host=web1 since=2026-11-01T00:00:00Z until=2026-11-02T00:00:00Z"


def test_a_run_that_fails_after_some_requests_keeps_its_count_and_metrics(harness: Harness) -> None:
    harness.f2b.ban("sshd", "45.155.205.1")
    prom = harness.workdir / "reconcile.prom"
    harness.config(cloudflare={"zone_ids": [ZONE_ID, ZONE_ID_2]}, metrics={"textfile": str(prom)})
    harness.cf.inject("400", method="GET", path=ZONE_ID_2, count=1)  # the second zone is unreadable
    result = harness.run()
    assert result.returncode == 1, result.stderr
    assert requests_made(result.stderr) == 2
    text = prom.read_text()
    assert "reconcile_api_requests 2.0" in text
    assert 'reconcile_bans{jail="sshd"} 1.0' in text


def test_a_429_after_a_failed_write_is_exit_1_and_says_both(harness: Harness) -> None:
    harness.f2b.ban("sshd", "45.155.205.1", "45.155.205.2", "45.155.205.3")
    harness.cf.inject("400", method="POST", count=1)  # the first create fails (not retried)
    harness.cf.rate_limit = 3  # GET, the failed POST, then 429
    harness.cf.rate_headers = "none"  # with them the pacer would stop before the limit, not meet a 429
    result = harness.run()
    assert result.returncode == 1, result.stderr
    summary = result.stderr.strip().splitlines()[-1]
    assert "1 failed" in summary and "rate limited by Cloudflare" in summary, summary


def test_a_refused_plan_says_it_was_refused(harness: Harness) -> None:
    for i in range(10):  # ten rules of ours, none banned any more: expiring all is refused
        harness.cf.add_rule(
            "zone", ZONE_ID, "ip", f"45.155.205.{i + 1}", notes=ENDED.replace("2026-11-02", "2099-11-02")
        )
    result = harness.run()
    assert result.returncode == 3
    assert "refused as unsafe, nothing changed" in result.stderr
    assert "report: would write" not in result.stderr and harness.cf.writes() == []


@pytest.mark.parametrize("force", [False, True])
def test_allow_rules_are_never_modified_or_deleted(harness: Harness, force: bool) -> None:
    notes = ["Fail2ban", "fail2ban office", "Fail2Ban sshd", ENDED]
    banned = [f"45.155.206.{i}" for i in range(1, 5)]
    unbanned = [f"45.155.207.{i}" for i in range(1, 5)]
    seeded = [
        harness.cf.add_rule("zone", ZONE_ID, "ip", ip, mode="whitelist", notes=note)
        for ips in (banned, unbanned)
        for ip, note in zip(ips, notes, strict=True)
    ]
    harness.f2b.ban("sshd", *banned)
    result = harness.run(*(["--force"] if force else []))
    assert result.returncode == 0, result.stderr
    assert [w.method for w in harness.cf.writes()] == []  # no PATCH, no DELETE, and no POST either
    after = harness.rules()
    for rule in seeded:
        assert after[rule["configuration"]["value"]] == rule
    report = harness.run("--report")
    assert report.stdout.count("foreign: an allow rule covers it") == 4
