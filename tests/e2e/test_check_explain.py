"""`reconcile --check` and `reconcile --explain IP` through the installed command (issue 11, DESIGN §7):
a real fail2ban-server and the emulator. Neither sends a write.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.cf_emulator import ZONE_ID
from tests.support.harness import Harness

pytestmark = [pytest.mark.fail2ban]

TAG = "Blocked by fail2ban"
CURL_ACTION = """\
[Definition]
actionban = curl -s -X POST https://api.cloudflare.com/client/v4/zones/<z>/firewall/access_rules/rules \\
    -H "Authorization: Bearer <t>" --data '{"mode":"block","configuration":{"value":"<ip>"}}'
actionunban = curl -s https://api.cloudflare.com/client/v4/zones/<z>/firewall/access_rules/rules | head
[Init]
z = 0
t = 0
"""


def lines_of(stdout: str) -> dict[str, str]:
    """check name -> status, from the table."""
    found = {}
    for line in stdout.splitlines():
        status, _, rest = line.partition("  ")
        if status.strip() in ("ok", "warn", "fail") and rest.strip():
            name = rest.strip().split("  ")[0]
            found[name] = status.strip()
    return found


def checks_json(h: Harness, *args: str) -> tuple[int, dict[str, dict[str, str]]]:
    result = h.run("--check", "--format", "json", *args)
    assert "Traceback" not in result.stderr
    doc = json.loads(result.stdout)
    return result.returncode, {c["name"]: c for c in doc["checks"]}


def test_check_on_a_good_setup(harness: Harness) -> None:
    harness.f2b.ban("sshd", "45.155.205.9")
    harness.config(metrics={"textfile": str(harness.workdir / "reconcile.prom")})
    result = harness.run("--check")
    assert result.returncode == 0, result.stdout + result.stderr
    status = lines_of(result.stdout)
    for name in ("config", "fail2ban", "fail2ban actions", "lock path", "metrics path", "token", "clock"):
        assert status.get(name) == "ok", (name, result.stdout)
    assert status["zone rules"] == "ok" and status["Cloudflare ranges"] == "ok"
    assert status["visitor addresses"] == "ok"
    code, doc = checks_json(harness)
    assert code == 0 and doc["token"]["status"] == "ok"
    assert harness.cf.writes() == []


def test_check_with_a_wrong_token(harness: Harness) -> None:
    harness.token_file.write_text("not-the-token\n")
    code, checks = checks_json(harness)
    assert code == 1 and checks["token"]["status"] == "fail"
    assert "401" in checks["token"]["found"] or "403" in checks["token"]["found"]


def test_check_with_an_expired_token(harness: Harness) -> None:
    harness.cf.token_status = "expired"
    harness.cf.token_expires_on = datetime(2026, 11, 1, tzinfo=UTC)
    code, checks = checks_json(harness)
    assert code == 1 and checks["token"]["status"] == "fail"
    assert "expired" in checks["token"]["found"] and "2026-11-01" in checks["token"]["found"]


def test_check_warns_about_clock_skew_and_changed_ranges(harness: Harness) -> None:
    harness.cf.date_offset = 300
    harness.cf.cloudflare_ipv4 = (*harness.cf.cloudflare_ipv4, "198.41.200.0/24")
    code, checks = checks_json(harness)
    assert code == 0
    assert checks["clock"]["status"] == "warn" and "behind" in checks["clock"]["found"]
    assert checks["Cloudflare ranges"]["status"] == "warn"
    assert "198.41.200.0/24" in checks["Cloudflare ranges"]["found"]


def test_check_with_fail2ban_stopped(harness: Harness) -> None:
    harness.f2b.stop()
    code, checks = checks_json(harness)
    assert code == 1 and checks["fail2ban"]["status"] == "fail"
    assert "not running" in checks["fail2ban"]["found"]
    assert harness.cf.writes() == []


def test_check_names_a_jail_whose_action_still_calls_cloudflare(harness: Harness) -> None:
    f2b = harness.f2b
    (f2b.conf / "action.d" / "cloudflare-token.conf").write_text(CURL_ACTION)
    (f2b.conf / "jail.local").write_text("[nginx-limit-req]\naction = noop\n         cloudflare-token\n")
    f2b.client("reload", "--restart", "nginx-limit-req")
    assert "cloudflare-token" in f2b.client("get", "nginx-limit-req", "actions").stdout
    code, checks = checks_json(harness)
    assert code == 1
    found = checks["fail2ban actions"]
    assert found["status"] == "fail"
    assert "jail nginx-limit-req, action cloudflare-token" in found["found"]
    assert "Migrating from the per-ban curl scripts" in found["todo"]
    assert harness.cf.writes() == []


def test_explain_a_banned_address_with_our_rule_and_a_foreign_one(harness: Harness) -> None:
    ours, foreign = "45.155.205.10", "45.155.205.11"
    harness.f2b.ban("sshd", ours, foreign)
    harness.f2b.ban("recidive", ours)
    harness.cf.add_rule("zone", ZONE_ID, "ip", foreign, notes="partner office")
    assert harness.run().returncode == 0
    harness.cf.clear_log()

    result = harness.run("--explain", ours)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "jail sshd: since" in out and "jail recidive: since" in out
    assert "owner web1" in out and "keep in zone" in out and "up to date" in out

    doc = json.loads(harness.run("--explain", foreign, "--format", "json").stdout)
    (rule,) = doc["rules"]
    assert rule["owner"]["kind"] == "untagged" and rule["notes"] == "partner office"
    assert [c["action"] for c in doc["next_run"]] == ["foreign"]

    # An address nothing bans or covers: exit 0, and it says so.
    nothing = harness.run("--explain", "45.155.205.99")
    assert nothing.returncode == 0 and "not banned by fail2ban" in nothing.stdout
    assert "no Cloudflare rule covers it" in nothing.stdout
    assert harness.cf.writes() == []


def test_explain_a_cloudflare_address_and_an_invalid_input(harness: Harness) -> None:
    harness.f2b.ban("nginx-limit-req", "104.16.0.5")
    result = harness.run("--explain", "104.16.0.5")
    assert result.returncode == 0, result.stderr
    assert "Cloudflare's own addresses" in result.stdout and "skip" in result.stdout
    bad = harness.run("--explain", "not-an-ip")
    assert bad.returncode == 2 and "not an IP address" in bad.stderr
    assert harness.cf.writes() == []


def test_explain_says_when_fail2ban_cannot_be_read(harness: Harness) -> None:
    lease = f"{TAG} jail=sshd host=web1 since=2026-11-21T00:00:00Z until=2099-01-01T00:00:00Z"
    harness.cf.add_rule("zone", ZONE_ID, "ip", "45.155.205.12", notes=lease)
    harness.f2b.stop()
    result = harness.run("--explain", "45.155.205.12")
    assert result.returncode == 1
    assert "could not read fail2ban" in result.stdout and "owner web1" in result.stdout
    assert harness.cf.writes() == []


def test_token_expiring_soon_is_a_warning(harness: Harness) -> None:
    harness.cf.token_expires_on = datetime.now(UTC) + timedelta(days=3)
    code, checks = checks_json(harness)
    assert code == 0 and checks["token"]["status"] == "warn"


def test_check_fails_a_lock_directory_others_can_write(harness: Harness) -> None:
    shared = harness.workdir / "shared-lock-dir"
    shared.mkdir()
    shared.chmod(0o1777)  # like /run/lock: every run would refuse it
    harness.config(run={"lock_file": str(shared / "lock")})
    code, checks = checks_json(harness)
    assert code == 1 and checks["lock path"]["status"] == "fail"
    assert "group or others can write" in checks["lock path"]["found"]


@pytest.mark.slow
def test_check_and_explain_with_the_list_backend(harness: Harness) -> None:
    harness.list_config()
    code, checks = checks_json(harness)
    assert code == 1, checks  # no WAF rule in the zone yet
    assert checks["IP list"]["status"] == "warn" and "the first run creates it" in checks["IP list"]["todo"]
    assert checks["WAF rule"]["status"] == "fail" and "(ip.src in $fail2ban)" in checks["WAF rule"]["found"]
    assert harness.cf.writes() == [] and harness.cf.lists() == []  # --check creates nothing

    harness.f2b.ban("sshd", "2a06:4880:1:2::7", "45.155.205.1")
    harness.cf.seed_entrypoint(ZONE_ID, [{"action": "block", "expression": "(ip.src in $fail2ban)"}])
    assert harness.run().returncode == 0
    code, checks = checks_json(harness)
    assert code == 0 and checks["IP list"]["status"] == "ok" and checks["WAF rule"]["status"] == "ok"
    assert "2 items readable" in checks["IP list"]["found"]

    harness.cf.clear_log()
    doc = json.loads(harness.run("--explain", "2a06:4880:1:2::7", "--format", "json").stdout)
    (item,) = doc["rules"]
    assert item["owner"] == {"kind": "hosts", "hosts": ["web1"]}
    assert [c["action"] for c in doc["next_run"]] == ["keep"]
    assert harness.cf.writes() == []
