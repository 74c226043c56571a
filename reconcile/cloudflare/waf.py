"""The zone WAF custom rule that makes the account IP list block (DESIGN §9).

The list blocks nothing by itself. For each zone, the `http_request_firewall_custom` entry point must hold
an enabled rule whose expression matches every address of the list: `ip.src in $<list_name>` as the whole
expression or as one alternative of an `or`, outside any string, never narrowed by `and` or negated by
`not`; its action that of `mode` or `block` (stricter than any challenge). `check` only
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


# Tokens of Cloudflare's rules language, as far as matching needs them: strings (raw ones too) are single
# tokens, so nothing inside a string ever counts; operators; and words (fields, keywords, `$lists`).
_TOKEN = re.compile(
    r"""\s+
    | (?P<raw>r(?P<hashes>\#*)".*?"(?P=hashes))
    | (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<open>")
    | (?P<op>&&|\|\||\^\^|==|!=|>=|<=|[(){}\[\]!<>,])
    | (?P<word>[^\s(){}\[\]"!&|^=<>,]+)
    | (?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)
_OR = ("or", "||")


def tokens(rule_expression: str) -> list[str] | None:
    """The expression's tokens (whitespace dropped); None when a string is not closed."""
    found = []
    for match in _TOKEN.finditer(rule_expression):
        if match.group("open") is not None:
            return None
        if not match.group().isspace():
            found.append(match.group())
    return found


def _unwrapped(toks: list[str]) -> list[str]:
    """Without parentheses that enclose the whole of it: `((a or b))` -> `a or b`."""
    while len(toks) >= 2 and toks[0] == "(" and _closing(toks, 0) == len(toks) - 1:
        toks = toks[1:-1]
    return toks


def _closing(toks: list[str], start: int) -> int:
    depth = 0
    for index in range(start, len(toks)):
        depth += {"(": 1, ")": -1}.get(toks[index], 0)
        if depth == 0:
            return index
    return -1


def _alternatives(toks: list[str]) -> list[list[str]] | None:
    """The operands of a top-level `or` (one, without one); None when the parentheses do not balance."""
    parts: list[list[str]] = [[]]
    depth = 0
    for tok in toks:
        depth += {"(": 1, ")": -1}.get(tok, 0)
        if depth < 0:
            return None
        if depth == 0 and tok in _OR:
            parts.append([])
        else:
            parts[-1].append(tok)
    return parts if depth == 0 else None


def _matches_all(toks: list[str], wanted: list[str]) -> bool:
    toks = _unwrapped(toks)
    parts = _alternatives(toks)
    if parts is None:
        return False
    if len(parts) == 1:
        return toks == wanted
    # `or` binds loosest: any alternative that is the test itself blocks every address of the list.
    return any(_matches_all(part, wanted) for part in parts)


def references(rule_expression: str, list_name: str) -> bool:
    """The expression tests `ip.src in $<list_name>` (that exact name, not `$<list_name>_v6`) somewhere
    outside a string: the operator's rule for the list, whether or not it enforces it."""
    toks = tokens(rule_expression)
    wanted = ["ip.src", "in", f"${list_name}"]
    return toks is not None and any(toks[i : i + 3] == wanted for i in range(len(toks) - 2))


def matches_list(rule_expression: str, list_name: str) -> bool:
    """The expression is true for every address of the list (DESIGN §9): `ip.src in $<list_name>` is the
    whole of it or one alternative of an `or`; not inside a string, not narrowed by `and`, not negated."""
    toks = tokens(rule_expression)
    return toks is not None and _matches_all(toks, ["ip.src", "in", f"${list_name}"])


def satisfies(action: object, mode: str) -> bool:
    """The rule's action is `mode`, or `block`, which is stricter than any challenge."""
    return action == mode or action == "block"


def enforcing(rules: Sequence[Any], list_name: str, mode: str) -> bool:
    """An enabled rule with the action of `mode` (or block) matches every address of the list."""
    return any(
        isinstance(r, dict)
        and r.get("enabled", True) is True
        and satisfies(r.get("action"), mode)
        and matches_list(str(r.get("expression", "")), list_name)
        for r in rules
    )


def _why_not(rule: dict[str, Any], list_name: str, mode: str) -> str:
    """Why a rule that names the list does not enforce it, naming the rule."""
    name = str(rule.get("description") or rule.get("id") or "?")[:80]
    expression = str(rule.get("expression", ""))
    shown = expression if len(expression) <= 120 else expression[:120] + "…"
    if not matches_list(expression, list_name):
        return (
            f"rule {name!r} narrows or negates the list ({shown!r}): it does not block every address "
            f"of ${list_name}"
        )
    if rule.get("enabled", True) is not True:
        return f"rule {name!r} is disabled"
    return f"rule {name!r} has action {rule.get('action')!r}, not {mode} or block"


def rule_body(list_name: str, mode: str) -> dict[str, Any]:
    # No `position`: a new rule goes to the end, after every rule of the operator's.
    return {"description": DESCRIPTION, "expression": expression(list_name), "action": mode, "enabled": True}


def enforce(
    transport: Transport, zones: Sequence[str], list_name: str, mode: str, how: str
) -> tuple[str, ...]:
    """One sentence per zone whose WAF does not enforce the list (after `create` did what it may)."""
    return tuple(p for zone in zones if (p := zone_status(transport, zone, list_name, mode, how)[0]))


def zone_status(transport: Transport, zone: str, list_name: str, mode: str, how: str) -> tuple[str, str]:
    """(why the zone does not enforce the list, "" when it does; the failed request's error, "" when the
    ruleset was read). The error is kept apart so that a hint is read from it, never from rule text."""
    try:
        return _zone(transport, zone, list_name, mode, how), ""
    except CloudflareError as exc:
        return f"zone {zone}: WAF custom rules not readable: {exc}", str(exc)


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
        # The operator's own rule for the list (disabled, another action, a narrowed or negated test):
        # theirs to change, not ours.
        why = "; ".join(_why_not(r, list_name, mode) for r in mentioned)
        return (
            f"zone {zone}: no WAF custom rule enforces ${list_name}, so the list blocks nobody there: {why}; "
            f"enable or change it, or make it a rule with {wanted}"
        )
    return (
        f"zone {zone}: no WAF custom rule enforces the list, so it blocks nobody there; add the rule "
        f'{wanted} (Security > WAF > Custom rules), or set [cloudflare] waf_rule = "create"'
    )
