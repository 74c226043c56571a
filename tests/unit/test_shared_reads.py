"""What the hostile review of 0.3 found where one change's new output met another's reads (DESIGN §7, §12):
`--check` keeps its table when the quota or the time limit stops a read, a hint comes only from the
refused request (never from another writer's text), `--explain` says nothing of what it could not read,
the quota's reserve is never more than the quota, and `quota_reserve` refuses 0 and more than a half."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconcile import config as config_mod
from reconcile.cloudflare import permissions
from reconcile.cloudflare.answers import Quota
from reconcile.cloudflare.backend import ZoneEnforcement
from reconcile.cloudflare.pacing import Pacer
from reconcile.core.model import BanEntry
from reconcile.errors import BudgetExhausted, ConfigError
from reconcile.ops import check, explain
from tests.support.fake_backend import FakeBackend

ZONE = "0" * 32
ACCOUNT = "a" * 32
DEFAULT_TODO = 'add that rule, or set [cloudflare] waf_rule = "create"'


def test_a_stop_while_reading_the_waf_is_one_failed_line_and_the_table_stays() -> None:
    class Stopped(FakeBackend):
        def enforcement_status(self) -> tuple[ZoneEnforcement, ...]:
            raise BudgetExhausted("the account's API quota is spent down to the reserve")

    rendered = check._backend_checks(Stopped())
    assert [c.name for c in rendered][-1] == "WAF rule"
    assert rendered[-1].status is check.Status.FAIL
    assert rendered[-1].todo == "see the error"  # neither a permission nor "add that rule"
    assert len(rendered) > 1  # what was read before the stop is still shown


def test_another_writers_text_never_picks_the_permission_hint() -> None:
    forged = (
        f"zone {ZONE}: the WAF rule(s) for the list do not enforce it: rule "
        f"'GET /accounts/{ACCOUNT}/rules/lists -> HTTP 403' narrows the list"
    )
    rendered = check._waf(ZoneEnforcement(ZONE, "fail2ban", "block", (forged,)))
    assert rendered.todo == DEFAULT_TODO


def test_a_refused_ruleset_read_names_zone_waf() -> None:
    error = f"GET /zones/{ZONE}/rulesets/phases/http_request_firewall_custom/entrypoint -> HTTP 403: no"
    problem = f"zone {ZONE}: WAF custom rules not readable: {error}"
    rendered = check._waf(ZoneEnforcement(ZONE, "fail2ban", "block", (problem,), error))
    assert f"the token lacks {permissions.ZONE_WAF}{permissions.SEP}Read" in rendered.todo


@pytest.mark.parametrize(
    ("error", "todo"),
    [
        ("GET /zones/x/rulesets -> HTTP 500: busy", "see the error"),
        ("the run's time limit of 5 s is reached", "see the error"),
    ],
)
def test_an_unread_ruleset_that_was_not_refused_says_see_the_error(error: str, todo: str) -> None:
    problem = f"zone {ZONE}: WAF custom rules not readable: {error}"
    rendered = check._waf(ZoneEnforcement(ZONE, "fail2ban", "block", (problem,), error))
    assert rendered.todo == todo


def test_a_hint_reads_the_request_only_at_the_start_of_the_error() -> None:
    quoted = f"the run's time limit is reached (GET /accounts/{ACCOUNT}/rules/lists -> HTTP 403)"
    assert permissions.refused(quoted) is None
    assert permissions.hint(quoted) == "see the error"


def test_explain_says_only_what_it_could_not_read() -> None:
    ip = ipaddress.ip_address("45.71.0.1")
    entry = BanEntry("sshd", str(ip), datetime(2026, 12, 3, tzinfo=UTC), None)
    found = explain.Explanation(ip, (entry,), (), (), (), ("Cloudflare: the account's API quota is spent",))
    text = explain.text(found)
    assert "could not read Cloudflare: the account's API quota is spent" in text
    assert "no Cloudflare rule covers it" not in text and "next run" not in text


def test_the_reserve_is_never_more_than_the_quota() -> None:
    now = [0.0]
    pacer = Pacer(200, 600, 100, clock=lambda: now[0], sleep=lambda s: None, quota_reserve=0.1)
    pacer.observe(Quota(1000, 300.0, 1200, 300))
    now[0] = 0.001  # others spent 900 in a millisecond: an absurd rate, kept for a whole window
    pacer.observe(Quota(100, 300.0, 1200, 300))
    assert pacer.others_rate() > 1200
    assert pacer.reserve(now[0]) == 1200


@pytest.mark.parametrize(
    ("value", "accepted"), [(0, False), (0.0, False), (0.01, True), (0.5, True), (0.51, False), (1, False)]
)
def test_quota_reserve_refuses_zero_and_more_than_a_half(
    tmp_path: Path, value: float, accepted: bool
) -> None:
    data = {"cloudflare": {"zone_ids": [ZONE], "quota_reserve": value}}
    if accepted:
        assert config_mod.from_mapping(data, tmp_path / "c.toml").cloudflare.quota_reserve == value
    else:
        with pytest.raises(ConfigError, match="quota_reserve"):
            config_mod.from_mapping(data, tmp_path / "c.toml")


def test_explain_without_fail2ban_never_says_not_banned() -> None:
    ip = ipaddress.ip_address("45.71.0.2")
    found = explain.Explanation(ip, (), (), (), (), ("fail2ban: fail2ban-client status: no socket",))
    text = explain.text(found)
    assert "could not read fail2ban" in text and "no Cloudflare rule covers it" in text
    assert "not banned by fail2ban" not in text and "next run" not in text
