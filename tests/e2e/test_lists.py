"""The list backend (DESIGN §9): its pure helpers (/64 items, foreign cover, capacity), then the installed
command against a real fail2ban and the emulator's account list (bulk operations, cursor, capacity)."""

from __future__ import annotations

import ipaddress
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconcile.core.model import Ban
from tests.support.cf_emulator import ZONE_ID
from tests.support.harness import Harness, requests_made

TAG = "Blocked by fail2ban"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def ban(ip: str, minutes_ago: int = 0, *, until: datetime | None = NOW + timedelta(hours=1)) -> Ban:
    return Ban(ipaddress.ip_address(ip), ("sshd",), NOW - timedelta(minutes=minutes_ago), until)


# --- pure: /64 items ---------------------------------------------------------------------------------


# --- pure: capacity ----------------------------------------------------------------------------------


# --- the installed command, a real fail2ban, the emulator's account list --------------------------------

integration = pytest.mark.fail2ban


def addresses(count: int, prefix: str = "45.155") -> list[str]:
    return [f"{prefix}.{i // 250}.{i % 250 + 1}" for i in range(count)]


ENTRYPOINT = "/rulesets/phases/http_request_firewall_custom/entrypoint$"  # the WAF check's read (a regex)


def list_id(h: Harness) -> str:
    (found,) = [x for x in h.cf.lists() if x["name"] == "fail2ban"]
    return str(found["id"])


def enforced(h: Harness) -> None:
    h.cf.seed_entrypoint(ZONE_ID, [{"action": "block", "expression": "(ip.src in $fail2ban)"}])


@integration
def test_2000_bans_from_empty_in_at_most_20_requests(harness: Harness) -> None:
    ips = addresses(2000)
    harness.f2b.ban("sshd", *ips)
    enforced(harness)
    harness.list_config()
    result = harness.run()
    assert result.returncode == 0, result.stderr
    assert set(harness.items()) == set(ips)
    assert requests_made(result.stderr) <= 20 and len(harness.cf.requests) <= 20
    writes = harness.cf.writes()
    assert [w.method for w in writes] == ["POST", "POST", "POST"]  # the list, then 1,000 items twice
    assert all(len(w.body) <= 1000 for w in writes[1:])
    assert "2000 added" in result.stderr
    harness.cf.clear_log()
    steady = harness.run()
    assert steady.returncode == 0 and "2000 kept" in steady.stderr and harness.cf.writes() == []
    pages = [r.query for r in harness.cf.requests if r.path.endswith("/items")]
    assert len(pages) == 4 and all(q["per_page"] == "500" for q in pages)  # by the cursor, 500 a page
    assert "cursor" not in pages[0] and all("cursor" in q for q in pages[1:])


@integration
def test_ipv6_addresses_share_their_64_until_none_is_banned(harness: Harness) -> None:
    one, two = "2a06:4880:1:2::7", "2a06:4880:1:2:ffff::8"
    harness.f2b.ban("sshd", one, two)
    enforced(harness)
    harness.list_config()
    first = harness.run()
    assert first.returncode == 0, first.stderr
    assert list(harness.items()) == ["2a06:4880:1:2::/64"]
    report = harness.run("--report")
    assert "2a06:4880:1:2::/64" in report.stdout
    harness.f2b.request("set", "sshd", "unbanip", one)
    assert harness.run().returncode == 0
    assert list(harness.items()) == ["2a06:4880:1:2::/64"]
    harness.f2b.request("set", "sshd", "unbanip", two)
    last = harness.run()
    assert last.returncode == 0, last.stderr
    assert harness.items() == {}


@integration
def test_foreign_items_are_never_touched_also_under_force(harness: Harness) -> None:
    made = harness.cf.create_list("fail2ban")
    foreign = {
        "45.155.205.1": "partner office",
        "45.156.0.0/16": "a whole network, by hand",
        "2a06:4880:1:2::/64": "",
    }
    for ip, comment in foreign.items():
        harness.cf.add_item(made["id"], ip, comment)
    seeded = harness.items()
    covered = ["45.155.205.1", "45.156.7.8", "2a06:4880:1:2::9"]
    harness.f2b.ban("sshd", *covered, "45.157.0.1")
    enforced(harness)
    harness.list_config()
    first = harness.run()
    assert first.returncode == 0, first.stderr
    sent = [i["ip"] for w in harness.cf.writes() for i in (w.body if isinstance(w.body, list) else [])]
    assert sent == ["45.157.0.1"]
    assert "3 foreign" in first.stderr
    harness.f2b.request("unban", "--all")
    forced = harness.run("--force")
    assert forced.returncode == 0, forced.stderr
    assert harness.items() == seeded


@integration
def test_capacity_50_with_60_bans_keeps_the_50_newest(harness: Harness) -> None:
    harness.cf.lists_state.capacity_limit = 50  # Cloudflare fails an operation that would go over
    old, new = addresses(10, "45.160"), addresses(50, "45.161")
    harness.f2b.ban("sshd", *old)
    time.sleep(1.1)  # fail2ban's times have second precision: the later bans are newer
    harness.f2b.ban("sshd", *new)
    enforced(harness)
    textfile = harness.workdir / "reconcile.prom"
    harness.list_config(cloudflare={"list_capacity": 50}, metrics={"textfile": str(textfile)})
    result = harness.run()
    assert result.returncode == 0, result.stderr
    assert set(harness.items()) == set(new)
    assert "reconcile_over_capacity 10.0" in textfile.read_text()
    report = harness.run("--report", "--action", "skip")
    assert report.stdout.count("skip: over list capacity") == 10
    # A newer ban takes the place of one of the oldest of this host's own items.
    time.sleep(1.1)
    harness.f2b.ban("sshd", "45.162.0.1")
    again = harness.run()
    assert again.returncode == 0, again.stderr
    items = harness.items()
    assert len(items) == 50 and "45.162.0.1" in items and len(set(items) & set(new)) == 49
    assert [w.method for w in harness.cf.writes()][-2:] == ["DELETE", "POST"]  # room first, at capacity


@integration
def test_check_without_the_waf_rule_syncs_then_exits_1_with_the_rule_and_with_it_0(harness: Harness) -> None:
    harness.f2b.ban("sshd", "45.155.205.1")
    harness.list_config()
    missing = harness.run()
    assert missing.returncode == 1, missing.stderr
    assert '"(ip.src in $fail2ban)", action "block"' in missing.stderr and ZONE_ID in missing.stderr
    assert list(harness.items()) == ["45.155.205.1"]  # synced all the same
    assert harness.cf.zone_rules(ZONE_ID) == []  # check never writes
    enforced(harness)
    present = harness.run()
    assert present.returncode == 0, present.stderr


@integration
def test_check_refuses_a_disabled_rule_another_action_or_another_list(harness: Harness) -> None:
    harness.cf.seed_entrypoint(
        ZONE_ID,
        [
            {"action": "block", "expression": "(ip.src in $fail2ban)", "enabled": False},
            {"action": "log", "expression": "(ip.src in $fail2ban)"},
            {"action": "block", "expression": "(ip.src in $fail2ban_v6)"},
        ],
    )
    harness.list_config(cloudflare={"waf_rule": "create"})
    result = harness.run()
    assert result.returncode == 1 and "no WAF custom rule enforces $fail2ban" in result.stderr
    assert "is disabled" in result.stderr and "has action 'log', not block" in result.stderr
    assert len(harness.cf.zone_rules(ZONE_ID)) == 3  # the operator's rule for the list is theirs


@integration
def test_create_appends_one_rule_and_leaves_the_operators_rules_byte_identical(harness: Harness) -> None:
    harness.cf.seed_entrypoint(
        ZONE_ID,
        [
            {
                "action": "skip",
                "expression": '(http.request.uri.path eq "/health")',
                "description": "probes",
                "action_parameters": {"ruleset": "current"},
            },
            {"action": "managed_challenge", "expression": '(ip.geoip.country eq "T1")', "description": "tor"},
        ],
    )
    before = harness.cf.zone_rules(ZONE_ID)
    harness.f2b.ban("sshd", "45.155.205.1")
    harness.list_config(cloudflare={"waf_rule": "create"})
    first = harness.run()
    assert first.returncode == 0, first.stderr
    after = harness.cf.zone_rules(ZONE_ID)
    assert after[:2] == before and len(after) == 3
    assert (after[2]["expression"], after[2]["action"], after[2]["enabled"]) == (
        "(ip.src in $fail2ban)",
        "block",
        True,
    )
    harness.cf.clear_log()
    second = harness.run()
    assert second.returncode == 0, second.stderr
    assert harness.cf.zone_rules(ZONE_ID) == after and harness.cf.writes() == []


@integration
def test_create_makes_the_entry_point_of_a_zone_without_one(harness: Harness) -> None:
    harness.f2b.ban("sshd", "45.155.205.1")
    harness.list_config(cloudflare={"waf_rule": "create"})
    assert harness.run().returncode == 0
    ((rule),) = harness.cf.zone_rules(ZONE_ID)
    assert rule["expression"] == "(ip.src in $fail2ban)"


@integration
def test_a_failed_operation_is_reported_with_cloudflares_error_and_redone_next_run(harness: Harness) -> None:
    harness.f2b.ban("sshd", "45.155.205.1", "45.155.205.2")
    enforced(harness)
    harness.list_config()
    harness.cf.fail_next_operation("This list is at the maximum number of items")
    failed = harness.run()
    assert failed.returncode == 1
    assert "bulk operation failed: This list is at the maximum number of items" in failed.stderr
    assert "2 failed" in failed.stderr and harness.items() == {}
    again = harness.run()
    assert again.returncode == 0, again.stderr
    assert set(harness.items()) == {"45.155.205.1", "45.155.205.2"}


@pytest.mark.slow
@integration
def test_busy_429_with_slow_operations_gets_no_429(harness: Harness) -> None:
    harness.cf.lists_state.operation_delay = 2.0
    harness.cf.lists_state.busy_429 = True
    ips = addresses(1500)
    harness.f2b.ban("sshd", *ips)
    enforced(harness)
    harness.list_config()
    result = harness.run()
    assert result.returncode == 0, result.stderr
    assert harness.cf.lists_state.busy_refused == 0 and "rate-limited" not in result.stderr
    assert len(harness.items()) == 1500
    harness.f2b.request("set", "sshd", "unbanip", *ips[:400])
    expired = harness.run()
    assert expired.returncode == 0, expired.stderr
    assert len(harness.items()) == 1100 and harness.cf.lists_state.busy_refused == 0


@integration
def test_a_429_from_another_operation_ends_the_run_with_4(harness: Harness) -> None:
    harness.f2b.ban("sshd", "45.155.205.1")
    enforced(harness)
    harness.list_config()
    assert harness.run().returncode == 0
    harness.cf.lists_state.operation_delay = 30.0
    # Another host's write still running: any write of ours now gets 429.
    harness.cf.lists_state.handle(
        "items",
        ("01a7362d577a6c3019a474fd6f485823", list_id(harness)),
        "POST",
        {},
        [{"ip": "45.155.205.99", "comment": "another host"}],
    )
    harness.f2b.ban("sshd", "45.155.205.2")
    result = harness.run()
    assert result.returncode == 4, result.stderr
    assert "rate limited" in result.stderr


@integration
def test_a_429_on_the_waf_check_ends_the_report_and_the_run_with_4(harness: Harness) -> None:
    # The WAF check is read while the items are listed: its 429 must end the run whether it comes before
    # the items' last page or after (it once ended --report with 0 and a report, or 4, by timing).
    harness.f2b.ban("sshd", "45.155.205.1")
    enforced(harness)
    harness.list_config()
    for args in (["--report"], []):
        harness.cf.inject("429", method="GET", path=ENTRYPOINT)
        result = harness.run(*args)
        assert result.returncode == 4, result.stderr
        assert "rate limited" in result.stderr and "entrypoint" in result.stderr, result.stderr
        assert result.stdout == "" and harness.items() == {}


@integration
def test_a_429_on_the_waf_check_decides_over_the_items_failing_meanwhile(harness: Harness) -> None:
    # The items' first page refused (403) while the WAF check meets a 429: the 429 ends the run with 4, as
    # it would have alone, whichever answer came first; the 403 is still said. `--check` then names the
    # requests it did not send as not sent, not as answered 429.
    harness.f2b.ban("sshd", "45.155.205.1")
    enforced(harness)
    harness.list_config()
    assert harness.run().returncode == 0
    for args in (["--report"], []):
        harness.cf.inject("403", method="GET", path="/items$")
        harness.cf.inject("429", method="GET", path=ENTRYPOINT)
        result = harness.run(*args)
        assert result.returncode == 4, result.stderr
        assert "entrypoint -> HTTP 429" in result.stderr and "-> HTTP 403" in result.stderr, result.stderr
    harness.cf.inject("429", method="GET", path=ENTRYPOINT)
    checked = harness.run("--check")
    assert "not sent: an earlier request was rate limited" in checked.stdout, checked.stdout
    assert checked.stdout.count("HTTP 429") == 1, checked.stdout


@integration
def test_the_mass_expiry_guard_applies_to_items(harness: Harness, tmp_path: Path) -> None:
    ips = addresses(20)
    harness.f2b.ban("sshd", *ips)
    enforced(harness)
    harness.list_config()
    assert harness.run().returncode == 0
    harness.f2b.request("set", "sshd", "unbanip", *ips[:10])
    refused = harness.run()
    assert refused.returncode == 3 and "refusing to expire 10 of 20" in refused.stderr
    assert len(harness.items()) == 20


@pytest.mark.slow
@integration
def test_switching_from_rules_keeps_every_block_until_the_list_is_enforced(harness: Harness) -> None:
    ips = addresses(12)
    shared = ips[0]
    harness.cf.add_rule(
        "zone",
        ZONE_ID,
        "ip",
        shared,
        notes=f"{TAG} jail=sshd host=web2 since=2026-11-21T00:00:00Z until=2099-01-01T00:00:00Z",
    )
    harness.f2b.ban("sshd", *ips)
    harness.config()
    assert harness.run().returncode == 0
    assert set(harness.rules()) == set(ips)
    harness.list_config()
    unenforced = harness.run()
    assert unenforced.returncode == 1 and set(harness.items()) == set(ips)
    assert set(harness.rules()) == set(ips)  # no WAF rule yet: the rules still block
    enforced(harness)
    counts = []
    for _ in range(8):
        result = harness.run()
        assert result.returncode == 0, result.stderr
        assert set(harness.items()) == set(ips)
        counts.append(len(harness.rules()))
    assert counts[0] == 12 - 3  # at most max_expire_fraction of them per run: the guard never refuses
    assert counts[-1] == 1 and counts == sorted(counts, reverse=True)
    (left,) = harness.rules().values()
    assert left["configuration"]["value"] == shared and "host=web2 " in left["notes"]  # web2's, web1 left it


@integration
def test_a_64_with_an_allowlisted_address_is_not_pushed(harness: Harness) -> None:
    harness.f2b.ban("sshd", "2a06:4880:1:2::7", "45.155.205.1")
    enforced(harness)
    harness.list_config(policy={"host_id": "web1", "allowlist": ["2a06:4880:1:2::5/128"]})
    result = harness.run()
    assert result.returncode == 0, result.stderr
    assert list(harness.items()) == ["45.155.205.1"] and "1 skipped" in result.stderr
