"""The zone WAF custom rule that makes the account IP list block (DESIGN §9).

The list blocks nothing by itself. For each zone, the `http_request_firewall_custom` entry point must hold
an enabled rule whose expression contains `ip.src in $<list_name>` with the action of `mode`. `check` only
says what to add; `create` appends that one rule (creating the entry point when the zone has none) and
never modifies, reorders or removes any other rule: an earlier rule of the operator's that skips or
allows traffic stays the operator's call.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from reconcile.cloudflare.transport import ApiError, Transport
from reconcile.errors import CloudflareError

log = logging.getLogger("reconcile.cloudflare")

PHASE = "http_request_firewall_custom"
DESCRIPTION = "fail2ban bans (reconcile)"


def expression(list_name: str) -> str:
    return f"(ip.src in ${list_name})"


def references(rule_expression: str, list_name: str) -> bool:
    """The expression tests `ip.src in $<list_name>`, that exact name (not `$<list_name>_v6`)."""
    return re.search(rf"ip\.src\s+in\s+\${re.escape(list_name)}(?![A-Za-z0-9_])", rule_expression) is not None


def enforcing(rules: Sequence[Any], list_name: str, mode: str) -> bool:
    """An enabled rule with the action of `mode` references the list."""
    return any(
        isinstance(r, dict)
        and r.get("enabled", True) is True
        and r.get("action") == mode
        and references(str(r.get("expression", "")), list_name)
        for r in rules
    )


def rule_body(list_name: str, mode: str) -> dict[str, Any]:
    # No `position`: a new rule goes to the end, after every rule of the operator's.
    return {"description": DESCRIPTION, "expression": expression(list_name), "action": mode, "enabled": True}


def enforce(
    transport: Transport, zones: Sequence[str], list_name: str, mode: str, how: str
) -> tuple[str, ...]:
    """One sentence per zone whose WAF does not enforce the list (after `create` did what it may)."""
    problems = []
    for zone in zones:
        try:
            problem = _zone(transport, zone, list_name, mode, how)
        except CloudflareError as exc:
            problem = f"zone {zone}: WAF custom rules not readable: {exc}"
        if problem:
            problems.append(problem)
    return tuple(problems)


def _zone(transport: Transport, zone: str, list_name: str, mode: str, how: str) -> str:
    zone_path = f"/zones/{quote(zone, safe='')}/rulesets"
    path = f"{zone_path}/phases/{PHASE}/entrypoint"
    try:
        ruleset = transport.call("GET", path)
    except ApiError as exc:
        if exc.status != 404:
            raise
        ruleset = None  # the zone has no custom rules at all
    if ruleset is not None and not isinstance(ruleset, dict):
        raise CloudflareError("result is not a ruleset", method="GET", path=path)
    rules = ruleset.get("rules", []) if ruleset else []
    if not isinstance(rules, list):
        raise CloudflareError("the ruleset's rules are not a list", method="GET", path=path)
    if enforcing(rules, list_name, mode):
        return ""
    wanted = f'expression "{expression(list_name)}", action "{mode}"'
    mentioned = [
        r for r in rules if isinstance(r, dict) and references(str(r.get("expression", "")), list_name)
    ]
    if how == "create" and not mentioned:
        if ruleset is None:
            body = {"name": "default", "kind": "zone", "phase": PHASE, "rules": [rule_body(list_name, mode)]}
            transport.call("POST", zone_path, body=body)
        else:
            rules_path = f"{zone_path}/{quote(str(ruleset.get('id', '')), safe='')}/rules"
            transport.call("POST", rules_path, body=rule_body(list_name, mode))
        log.info("zone %s: added the WAF custom rule %s", zone, wanted)
        return ""
    if mentioned:
        # The operator's own rule for the list (disabled, or another action): theirs to change, not ours.
        return (
            f"zone {zone}: the WAF custom rule for ${list_name} is disabled or does not {mode}: the list "
            f"blocks nobody there; enable it, or make it a rule with {wanted}"
        )
    return (
        f"zone {zone}: no WAF custom rule enforces the list, so it blocks nobody there; add the rule "
        f'{wanted} (Security > WAF > Custom rules), or set [cloudflare] waf_rule = "create"'
    )
