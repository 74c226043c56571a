"""reconcile.waf: which zone custom rules enforce the list (pure), and the exact rule it creates."""

from __future__ import annotations

from typing import Any

import pytest

from reconcile.cloudflare import waf


@pytest.mark.parametrize(
    ("expression", "found"),
    [
        ("(ip.src in $fail2ban)", True),
        ('(ip.src in $fail2ban and http.host eq "example.com")', True),
        ("(ip.src in $fail2ban_v6)", False),  # another list whose name starts the same
        ("(ip.src in $fail2bans)", False),
        ("(ip.src in $other or ip.src in $fail2ban)", True),
        ("(ip.dst in $fail2ban)", False),
        ("(ip.src in {1.2.3.4})", False),
    ],
)
def test_references_the_exact_list_name(expression: str, found: bool) -> None:
    assert waf.references(expression, "fail2ban") is found


def rule(**fields: Any) -> dict[str, Any]:
    return {"action": "block", "expression": "(ip.src in $fail2ban)", "enabled": True, **fields}


def test_only_an_enabled_rule_with_the_modes_action_enforces() -> None:
    assert waf.enforcing([rule()], "fail2ban", "block")
    assert waf.enforcing([{"action": "block", "expression": "(ip.src in $fail2ban)"}], "fail2ban", "block")
    assert not waf.enforcing([rule(enabled=False)], "fail2ban", "block")
    assert not waf.enforcing([rule(action="log")], "fail2ban", "block")
    # block is stricter than any challenge (DESIGN §9); a challenge does not satisfy block
    assert waf.enforcing([rule()], "fail2ban", "managed_challenge")
    assert not waf.enforcing([rule(action="managed_challenge")], "fail2ban", "block")
    assert waf.enforcing([rule(action="managed_challenge")], "fail2ban", "managed_challenge")
    assert not waf.enforcing([], "fail2ban", "block")


def test_the_rule_created_is_exactly_the_documented_one_without_a_position() -> None:
    assert waf.rule_body("fail2ban", "block") == {
        "description": waf.DESCRIPTION,
        "expression": "(ip.src in $fail2ban)",
        "action": "block",
        "enabled": True,
    }
