"""The `reconcile` command end to end: a real private fail2ban-server, the Cloudflare emulator, processes.

Addresses must be global (documentation and private ranges are allowlisted by design), so these tests use
real-looking public addresses. Nothing is ever sent to them: they are data in fail2ban and in the emulator.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from reconcile import lock
from reconcile.core.notes import Note, NoteKind, parse_note
from tests.support.cf_emulator import ACCOUNT_ID, TOKEN, ZONE_ID
from tests.support.harness import RECONCILE, Harness

pytestmark = pytest.mark.fail2ban

TAG = "Blocked by fail2ban"
V4 = "45.155.205.233"
V6 = "2a06:4880:1::7"
TWO_JAILS = "91.240.118.172"
PERMANENT = "185.220.101.9"


def seed_initial(h: Harness) -> None:
    h.f2b.ban("sshd", V4, TWO_JAILS)
    h.f2b.ban("nginx-limit-req", V6.upper(), TWO_JAILS)
    h.f2b.ban("manual", PERMANENT)
    h.f2b.ban("recidive", "not_an_ip", "45.155.0.0/16", "10.9.8.7")  # invalid, invalid, allowlisted


def lease(rule: dict[str, Any]) -> Note:
    note = parse_note(rule["notes"], TAG)
    assert note is not None and note.kind is NoteKind.LEASE, rule["notes"]
    return note


def test_initial_sync_then_a_second_run_writes_nothing(harness: Harness):
    seed_initial(harness)
    first = harness.run()
    assert first.returncode == 0, first.stderr
    rules = harness.rules()
    assert set(rules) == {V4, V6, TWO_JAILS, PERMANENT}
    assert {v: r["configuration"]["target"] for v, r in rules.items()} == {
        V4: "ip",
        V6: "ip6",
        TWO_JAILS: "ip",
        PERMANENT: "ip",
    }
    assert all(r["mode"] == "block" for r in rules.values())
    merged = lease(rules[TWO_JAILS])
    assert merged.jails == ("nginx-limit-req", "sshd") and merged.hosts == ("web1",)
    assert lease(rules[PERMANENT]).until is None
    assert lease(rules[V4]).until is not None
    sent = [w.body["configuration"]["value"] for w in harness.cf.writes() if w.method == "POST"]
    assert "not_an_ip" not in sent and "45.155.0.0/16" not in sent and "10.9.8.7" not in sent
    assert "'not_an_ip'" in first.stderr and "not a single IP address" in first.stderr
    assert "4 added, 0 renewed, 0 expired" in first.stderr

    harness.cf.clear_log()
    second = harness.run()
    assert second.returncode == 0, second.stderr
    assert harness.cf.writes() == []
    assert "0 added, 0 renewed, 0 expired" in second.stderr
    assert "4 kept" in second.stderr


def test_unbanning_three_ips_expires_exactly_those_rules(harness: Harness):
    ips = [f"45.155.205.{i}" for i in range(10, 22)]
    harness.f2b.ban("sshd", *ips)
    assert harness.run().returncode == 0
    assert set(harness.rules()) == set(ips)
    ids = {v: r["id"] for v, r in harness.rules().items()}
    gone = ips[:3]
    harness.f2b.request("set", "sshd", "unbanip", *gone)
    harness.cf.clear_log()
    result = harness.run()
    assert result.returncode == 0, result.stderr
    deleted = sorted(w.path.rsplit("/", 1)[1] for w in harness.cf.writes() if w.method == "DELETE")
    assert deleted == sorted(ids[v] for v in gone)
    assert set(harness.rules()) == set(ips[3:])
    assert [w.method for w in harness.cf.writes()] == ["DELETE"] * 3


def test_untagged_rules_and_other_hosts_live_rules_are_never_touched(harness: Harness):
    banned_foreign, unbanned_foreign = "45.155.205.50", "45.155.205.51"
    other_live_banned, other_live_unbanned = "45.155.205.52", "45.155.205.53"
    future = "2099-01-01T00:00:00Z"
    seeded = [
        harness.cf.add_rule("zone", ZONE_ID, "ip", banned_foreign, notes="partner office, keep"),
        harness.cf.add_rule("zone", ZONE_ID, "ip", unbanned_foreign, mode="whitelist", notes="monitoring"),
        harness.cf.add_rule(
            "zone",
            ZONE_ID,
            "ip",
            other_live_banned,
            notes=f"{TAG} jail=sshd host=web2 since=2026-11-21T00:00:00Z until={future}",
        ),
        harness.cf.add_rule(
            "zone",
            ZONE_ID,
            "ip",
            other_live_unbanned,
            notes=f"{TAG} jail=sshd host=web2 since=2026-11-21T00:00:00Z until={future}",
        ),
        harness.cf.add_rule(
            "zone", ZONE_ID, "ip", "45.155.205.54", notes="Blocked by fail2ban, by hand: ask Ann"
        ),
    ]
    harness.f2b.ban("sshd", banned_foreign, other_live_banned)
    result = harness.run()
    assert result.returncode == 0, result.stderr
    after = harness.rules()
    joined = seeded.pop(2)  # another host's live lease of an address banned here: this host joins it
    for rule in seeded:
        value = rule["configuration"]["value"]
        assert after[value] == rule, f"{value} was modified"
    touched = {w.path.rsplit("/", 1)[1] for w in harness.cf.writes() if w.method in ("PATCH", "DELETE")}
    assert touched.isdisjoint({r["id"] for r in seeded})
    assert lease(after[other_live_banned]).hosts == ("web1", "web2")
    assert after[other_live_banned]["id"] == joined["id"]
    # The banned IP under an untagged rule is seen in the listing (DESIGN §3): foreign, and no create.
    assert [w for w in harness.cf.writes() if w.method == "POST"] == []
    assert "1 foreign" in result.stderr

    report = harness.run("--report")
    assert "web2's lease, until" in report.stdout and "unknown format" in report.stdout


def test_fail2ban_down_aborts_before_any_request(harness: Harness):
    harness.f2b.ban("sshd", *[f"45.155.205.{i}" for i in range(30, 45)])
    assert harness.run().returncode == 0
    harness.f2b.stop()
    harness.cf.clear_log()
    result = harness.run()
    assert result.returncode == 1
    assert "fail2ban" in result.stderr and "not running" in result.stderr
    assert harness.cf.requests == []
    assert len(harness.rules()) == 15


def test_stale_socket_aborts_too(harness: Harness):
    harness.f2b.ban("sshd", "45.155.205.60")
    assert harness.run().returncode == 0
    harness.f2b.kill9()
    harness.cf.clear_log()
    result = harness.run()
    assert result.returncode == 1 and harness.cf.requests == []
    assert len(harness.rules()) == 1


def test_unban_all_is_refused_then_forced(harness: Harness):
    ips = [f"45.155.205.{i}" for i in range(100, 120)]
    harness.f2b.ban("sshd", *ips)
    assert harness.run().returncode == 0
    assert len(harness.rules()) == 20
    harness.f2b.request("unban", "--all")
    harness.cf.clear_log()
    refused = harness.run()
    assert refused.returncode == 3
    assert (
        "refusing to expire 20 of 20 managed rules, more than 30% of 20 (6); "
        "run with --force if this is intended" in refused.stderr
    )
    assert harness.cf.writes() == [] and len(harness.rules()) == 20
    report = harness.run("--report")
    assert report.returncode == 3 and "refusing to expire 20 of 20" in report.stderr
    forced = harness.run("--force")
    assert forced.returncode == 0, forced.stderr
    assert harness.rules() == {}
    assert [w.method for w in harness.cf.writes()] == ["DELETE"] * 20


def test_report_changes_nothing_and_shows_the_plan(harness: Harness):
    seed_initial(harness)
    harness.cf.add_rule("zone", ZONE_ID, "ip", "45.155.205.70", notes="Fail2Ban sshd")  # legacy, not banned
    report = harness.run("--report")
    assert report.returncode == 0, report.stderr
    assert harness.cf.writes() == []
    assert [r.method for r in harness.cf.requests] == ["GET"]
    for header in (
        "IP",
        "jails",
        "banned since",
        "ban ends",
        "Cloudflare rule (id / age / hosts)",
        "planned action",
    ):
        assert header in report.stdout
    assert f"{V6} " in report.stdout and "permanent" in report.stdout
    assert "expire: no longer banned" in report.stdout and "legacy" in report.stdout
    assert "skip: not a single IP address" in report.stdout and "skip: allowlisted" in report.stdout
    assert "would write 4 to add, 0 to renew, 1 to expire" in report.stderr

    as_json = harness.run("--report", "--format", "json")
    doc = json.loads(as_json.stdout)
    actions = {c["ip"]: c["action"] for c in doc["changes"]}
    assert actions[V4] == "add" and actions["45.155.205.70"] == "expire" and actions["not_an_ip"] == "skip"
    assert doc["counts"]["add"] == 4 and harness.cf.writes() == []


def test_legacy_rules_are_adopted_and_rewritten(harness: Harness):
    harness.cf.add_rule(
        "zone", ZONE_ID, "ip", V4, notes="Blocked by fail2ban on 11/21/26 04:03:07 (ASN: AS13335)"
    )
    harness.cf.add_rule("zone", ZONE_ID, "ip", "45.155.205.71", notes="Fail2ban")
    harness.f2b.ban("sshd", V4)
    result = harness.run()
    assert result.returncode == 0, result.stderr
    rules = harness.rules()
    assert set(rules) == {V4}
    assert lease(rules[V4]).hosts == ("web1",)
    assert [w.method for w in harness.cf.writes()] == ["PATCH", "DELETE"]


def test_account_level_rules(harness: Harness):
    harness.f2b.ban("sshd", V4, V6)
    config = harness.config(cloudflare={"zone_ids": [], "account_id": ACCOUNT_ID})
    assert harness.run(config=config).returncode == 0
    values = {r["configuration"]["value"] for r in harness.cf.rules("account", ACCOUNT_ID)}
    assert values == {V4, V6}
    assert harness.cf.rules("zone", ZONE_ID) == []


def test_a_second_run_while_one_holds_the_lock_exits_at_once(harness: Harness):
    harness.f2b.ban("sshd", V4)
    harness.config()
    with lock.hold(harness.workdir / "reconcile.lock") as held:
        assert held
        result = harness.run()
    assert result.returncode == 0
    assert "another run holds" in result.stderr
    assert harness.cf.requests == [] and harness.rules() == {}


def test_bad_config_and_bad_token_file(harness: Harness):
    bad = harness.workdir / "bad.toml"
    bad.write_text('[cloudflare]\nzone_ids = ["x"]\nrequests_per_minit = 5\n')
    result = harness.run(config=bad)
    assert result.returncode == 2
    assert str(bad) in result.stderr and "requests_per_minit" in result.stderr
    assert "Traceback" not in result.stderr
    harness.config()
    harness.token_file.chmod(0o644)
    result = harness.run()
    assert result.returncode == 2 and "readable by group or others" in result.stderr
    assert harness.cf.requests == []


def test_a_token_file_that_is_not_utf8_is_a_config_error(harness: Harness):
    harness.f2b.ban("sshd", V4)
    harness.config()
    harness.token_file.write_bytes(b"cf-\xff\xfe-token\n")
    result = harness.run()
    assert result.returncode == 2, result.stderr
    assert "[cloudflare] api_token_file" in result.stderr and "not UTF-8" in result.stderr
    assert str(harness.token_file) in result.stderr and "internal error" not in result.stderr
    credentials_dir = harness.workdir / "credentials"
    credentials_dir.mkdir()
    (credentials_dir / "cloudflare-api-token").write_bytes(b"\xff\n")
    result = harness.run(env={"CREDENTIALS_DIRECTORY": str(credentials_dir)})
    assert result.returncode == 2, result.stderr
    assert "cloudflare-api-token is not UTF-8" in result.stderr and "internal error" not in result.stderr
    assert harness.cf.requests == []


def untagged(h: Harness, values: list[str]) -> None:
    for n, value in enumerate(values):
        h.cf.add_rule("zone", ZONE_ID, "ip", value, mode="block", notes=f"operator: partner {n}")


def our_lease(until: str = "2099-01-01T00:00:00Z") -> str:
    return f"{TAG} jail=sshd host=web1 since=2026-11-21T00:00:00Z until={until}"


def test_banned_addresses_under_untagged_rules_cost_no_request(harness: Harness):
    # Issue 7 item 4: 40 such addresses with a budget of 30 requests used to give 29 wasted POSTs (10009)
    # a run, exit 4 for ever, and a stale rule that never expired.
    covered = [f"91.240.118.{i}" for i in range(10, 50)]
    stale = [f"45.155.205.{i}" for i in range(80, 85)]
    untagged(harness, covered)
    for value in stale:  # ours, no longer banned
        harness.cf.add_rule("zone", ZONE_ID, "ip", value, notes=our_lease())
    harness.f2b.ban("sshd", *covered)
    harness.config(cloudflare={"max_requests_per_run": 30})

    report = harness.run("--report", "--format", "json")
    assert report.returncode == 0, report.stderr
    doc = json.loads(report.stdout)
    actions = {c["ip"]: c["action"] for c in doc["changes"]}
    assert {actions[v] for v in covered} == {"foreign"} and doc["counts"]["foreign"] == 40
    assert {actions[v] for v in stale} == {"expire"} and doc["counts"]["add"] == 0
    table = harness.run("--report")
    assert sum(1 for line in table.stdout.splitlines() if "foreign" in line and "91.240.118." in line) == 40

    harness.cf.clear_log()
    first = harness.run()
    assert first.returncode == 0, first.stderr
    assert [r.method for r in harness.cf.requests] == ["GET"] + ["DELETE"] * 5
    assert set(harness.rules()) == set(covered)  # the stale ones expired, the operator's untouched

    harness.cf.clear_log()
    steady = harness.run()
    assert steady.returncode == 0, steady.stderr
    assert [r.method for r in harness.cf.requests] == ["GET"]  # zero POSTs, one request in all
    assert "40 foreign" in steady.stderr


def test_a_zone_listed_50_a_page_is_seen_whole(harness: Harness):
    # Issue 7 item 2: a server that honours at most 50 per page; 120 managed rules over 3 pages.
    harness.cf.clamp_per_page = 50
    banned = [f"91.240.{118 + i // 200}.{i % 200 + 1}" for i in range(100)]
    stale = [f"45.155.205.{i}" for i in range(100, 120)]
    harness.f2b.ban("sshd", *banned)
    first = harness.run()
    assert first.returncode == 0, first.stderr
    assert len(harness.rules()) == 100
    for value in stale:  # created last: they are on pages 3 (rules 101-120)
        harness.cf.add_rule("zone", ZONE_ID, "ip", value, notes=our_lease())

    harness.cf.clear_log()
    second = harness.run()
    assert second.returncode == 0, second.stderr
    methods = [r.method for r in harness.cf.requests]
    assert methods == ["GET"] * 3 + ["DELETE"] * 20  # no POST for the 100 that exist
    # Pages 2 and 3 go out together (paging.py): logged in either order.
    assert sorted(r.query["page"] for r in harness.cf.requests[:3]) == ["1", "2", "3"]
    assert set(harness.rules()) == set(banned)

    harness.cf.clear_log()
    assert harness.run().returncode == 0
    assert [r.method for r in harness.cf.requests] == ["GET"] * 2  # 100 rules: 50 + 50, total_pages 2


def test_a_server_that_ignores_page_ends_the_listing_as_incomplete(harness: Harness):
    harness.cf.clamp_per_page, harness.cf.ignore_page = 50, True
    stale = "45.155.205.90"  # ours, not banned, first in line: on "every" page
    harness.cf.add_rule("zone", ZONE_ID, "ip", stale, notes=our_lease())
    untagged(harness, [f"91.240.{118 + i // 200}.{i % 200 + 1}" for i in range(120)])
    harness.f2b.ban("sshd", V4)
    result = harness.run()
    assert result.returncode == 1, result.stderr
    assert "brings no rule not seen before" in result.stderr and "page=2" in result.stderr
    # Page 1, page 2 (and page 3, which page 1 announced and went out with it: paging.py), then the add
    # that an incomplete listing still allows; no expiry on a partial picture.
    methods = [r.method for r in harness.cf.requests]
    assert methods in (["GET", "GET", "POST"], ["GET", "GET", "GET", "POST"])
    assert V4 in harness.rules() and stale in harness.rules()


def test_a_create_whose_answer_was_lost_is_reported_as_added(harness: Harness):
    # Issue 7 item 9: the POST is stored, its answer lost; the retry answers 10009 for our own rule.
    harness.f2b.ban("sshd", V4)
    harness.cf.inject("lost", method="POST")
    result = harness.run()
    assert result.returncode == 0, result.stderr
    assert [(r.method, r.status) for r in harness.cf.requests] == [("GET", 200), ("POST", 0), ("POST", 400)]
    assert "1 added" in result.stderr and "0 foreign" in result.stderr
    assert "already covered by a foreign rule" not in result.stderr and "duplicate" not in result.stderr
    assert lease(harness.rules()[V4]).hosts == ("web1",)
    harness.cf.clear_log()
    assert harness.run().returncode == 0 and harness.cf.writes() == []


def test_wrong_token_is_a_clear_failure_that_never_shows_the_token(harness: Harness):
    harness.f2b.ban("sshd", V4)
    harness.config()
    wrong = "cf-wrong-token-Xy12"
    harness.token_file.write_text(wrong)
    result = harness.run("-v")
    assert result.returncode == 1
    assert "GET /zones/" in result.stderr and "HTTP 403" in result.stderr and "10000" in result.stderr
    assert wrong not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_verbose_run_shows_requests_and_never_the_token(harness: Harness):
    seed_initial(harness)
    result = harness.run("-v", "--format", "json")
    assert result.returncode == 0
    assert "POST /zones/" in result.stderr and "GET /zones/" in result.stderr
    assert "plan: add" in result.stderr
    assert TOKEN not in result.stdout + result.stderr
    assert json.loads(result.stdout)["counts"]["add"] == 4


def test_version_and_module_entry_point():
    for argv in ([sys.executable, "-m", "reconcile", "--version"], [str(RECONCILE), "--version"]):
        out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout
        assert out.startswith("reconcile ")


def test_metrics_file_records_success_and_failure(harness: Harness):
    from prometheus_client.parser import text_string_to_metric_families

    def samples(path):
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(path.read_text())
            for s in family.samples
        }

    prom = harness.workdir / "textfile" / "reconcile.prom"
    prom.parent.mkdir()
    harness.config(metrics={"textfile": str(prom)})
    harness.f2b.ban("sshd", V4, V6)
    assert harness.run().returncode == 0
    ok = samples(prom)
    assert ok[("reconcile_last_run_success", ())] == 1
    assert ok[("reconcile_bans", (("jail", "sshd"),))] == 2
    assert ok[("reconcile_changes_applied", (("action", "add"), ("result", "done")))] == 2
    harness.f2b.stop()
    assert harness.run().returncode == 1
    failed = samples(prom)
    assert failed[("reconcile_last_run_success", ())] == 0
    assert failed[("reconcile_last_run_exit_code", ())] == 1
