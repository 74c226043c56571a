"""Bans of Cloudflare's own or loopback addresses (DESIGN §11), through the installed command.

They mean the web server logs Cloudflare's edge (or cloudflared's 127.0.0.1) instead of the visitor: no
rule is ever pushed for them, and every run says so once, loudly, with the fix.
"""

from __future__ import annotations

import pytest

from tests.support.cf_emulator import ZONE_ID
from tests.support.harness import Harness

pytestmark = [pytest.mark.fail2ban]

CLOUDFLARE = ("104.16.0.5", "172.64.3.3", "2606:4700::1111")


def test_cloudflare_and_loopback_bans_make_no_rule_and_one_warning_per_run(harness: Harness) -> None:
    harness.f2b.ban("nginx-limit-req", *CLOUDFLARE)
    harness.f2b.ban("sshd", "127.0.0.1", "45.155.205.9")
    for args in ((), ("--report",), ("-q",)):
        result = harness.run(*args)
        assert result.returncode == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if "CF-Connecting-IP" in line]
        assert len(warnings) == 1, result.stderr  # one line: journald and cron mail keep it whole
        warning = warnings[0]
        assert "nginx-limit-req" in warning and "sshd" in warning
        assert "set_real_ip_from 127.0.0.1" in warning and "RemoteIPHeader CF-Connecting-IP" in warning
    assert set(harness.rules()) == {"45.155.205.9"}
    posted = [w.body["configuration"]["value"] for w in harness.cf.writes() if w.method == "POST"]
    assert posted == ["45.155.205.9"]
    report = harness.run("--report")
    assert report.stdout.count("skip: Cloudflare's own address") == 3


def test_a_rule_written_for_a_cloudflare_address_before_the_check_is_expired(harness: Harness) -> None:
    note = "Blocked by fail2ban jail=nginx-limit-req host=web1 since=2026-11-21T00:00:00Z until=permanent"
    harness.cf.add_rule("zone", ZONE_ID, "ip", "104.16.0.5", notes=note)
    harness.f2b.ban("nginx-limit-req", "104.16.0.5")
    result = harness.run()
    assert result.returncode == 0, result.stderr
    assert harness.rules() == {} and [w.method for w in harness.cf.writes()] == ["DELETE"]


def test_skip_cloudflare_ranges_false_pushes_them_but_still_warns(harness: Harness) -> None:
    harness.f2b.ban("nginx-limit-req", "104.16.0.5")
    harness.config(policy={"host_id": "web1", "skip_cloudflare_ranges": False})
    result = harness.run()
    assert result.returncode == 0, result.stderr
    assert set(harness.rules()) == {"104.16.0.5"}
    assert len([line for line in result.stderr.splitlines() if "CF-Connecting-IP" in line]) == 1
