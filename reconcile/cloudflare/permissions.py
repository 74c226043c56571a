"""Which API token permission each Cloudflare endpoint needs (DESIGN §9, §12), as the dashboard names them,
so that a 403 can say what to add to the token. Pure: read from the request's method and path."""

from __future__ import annotations

import re

# The separator the dashboard and the README use between a permission's parts.
SEP = " \N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK} "
FIREWALL_SERVICES = f"Zone{SEP}Firewall Services"
ACCOUNT_FIREWALL = f"Account{SEP}Account Firewall Access Rules"
FILTER_LISTS = f"Account{SEP}Account Filter Lists"
ZONE_WAF = f"Zone{SEP}Zone WAF"

_ZONE_RULES = re.compile(r"/zones/[^/]+/firewall/access_rules/")
_ACCOUNT_RULES = re.compile(r"/accounts/[^/]+/firewall/access_rules/")
_LISTS = re.compile(r"/accounts/[^/]+/rules/lists")
_RULESETS = re.compile(r"/zones/[^/]+/rulesets")
# How a CloudflareError begins, naming its request: "GET /zones/…?page=1 -> HTTP 403: …". Matched only at
# the start: what follows is Cloudflare's message, which may quote another writer's text.
_REFUSED = re.compile(r"(GET|POST|PATCH|PUT|DELETE) (/\S+) -> HTTP 403\b")
_DENIED = re.compile(r"(GET|POST|PATCH|PUT|DELETE) /\S+ -> HTTP 40[13]\b")


def needed(method: str, path: str) -> str | None:
    """The permission that `method path` needs, at the level a run needs it: Edit, since a run writes
    what it reads, but for a zone's WAF rulesets, which `waf_rule = "check"` only reads; None for an
    endpoint not mapped here."""
    level = "Read" if method == "GET" and _RULESETS.match(path) else "Edit"
    if _ZONE_RULES.match(path):
        return f"{FIREWALL_SERVICES}{SEP}{level}"
    if _ACCOUNT_RULES.match(path):
        return f"{ACCOUNT_FIREWALL}{SEP}{level}"
    if _LISTS.match(path):
        return f"{FILTER_LISTS}{SEP}{level}"
    if _RULESETS.match(path):
        return f"{ZONE_WAF}{SEP}{level}"
    return None


def refused(error: str) -> str | None:
    """The permission a 403 named in an error's text lacks (the request's own), else None."""
    found = _REFUSED.match(error)
    return None if found is None else needed(found[1], found[2])


def hint(error: str) -> str:
    """What to do about an unreadable resource: add the missing permission, when a 403 says which."""
    permission = refused(error)
    if permission is None:
        if _DENIED.match(error):
            return "see the error; the token may lack a permission (README, 'Cloudflare API token')"
        return "see the error"  # a time limit, the quota, a 5xx: nothing about permissions
    return f"the token lacks {permission}: add it to the token (README, 'Cloudflare API token')"
