"""`reconcile --explain IP` (DESIGN §7): everything about one address, and what the next run would do.

Reads like a run (fail2ban, then every rule or item that covers the address in each scope, foreign ones
too, as the backend finds them), plans with the backend's planning, and changes nothing.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from reconcile.cloudflare.credentials import Credentials
from reconcile.cloudflare.open import make_backend, make_client, policy_of
from reconcile.config import Config
from reconcile.core import ranges
from reconcile.core.addresses import is_allowlisted, is_built_in_allowlisted
from reconcile.core.changes import Change, Owner
from reconcile.core.merge import address_of, merge
from reconcile.core.model import BanEntry, IPAddress, Rule, RuleListing, ScopeKind
from reconcile.core.notes import format_time, parse_note
from reconcile.core.planner import owner_of
from reconcile.core.sanitize import escape
from reconcile.errors import EXIT_FAILURE, EXIT_OK, ReconcileError
from reconcile.fail2ban import state as fail2ban


@dataclass(frozen=True)
class Covering:
    """A rule that covers the address, with who owns it and the lease its notes carry."""

    rule: Rule
    owner: Owner
    until: str | None  # the lease's end ("permanent"), None without a lease


@dataclass(frozen=True)
class Explanation:
    ip: IPAddress
    entries: tuple[BanEntry, ...]  # this address in each jail that bans it
    status: tuple[str, ...]  # allowlist and Cloudflare-range findings
    rules: tuple[Covering, ...]  # every rule that covers it, in every scope
    changes: tuple[Change, ...]  # the next run's plan for this address, per scope
    problems: tuple[str, ...]  # what could not be read
    read_as: str = ""  # how the address given was read, when it was another spelling (IPv4-mapped)


def main(
    config: Config,
    creds: Credentials,
    ip: IPAddress,
    fmt: str,
    *,
    now: datetime | None = None,
    read_as: str = "",
) -> int:
    found = replace(explain(config, creds, ip, now or datetime.now(UTC)), read_as=read_as)
    # Notes, hosts and reasons are other writers' text: escaped before they reach the terminal (DESIGN §12).
    print(to_json(found) if fmt == "json" else escape(text(found)))
    return EXIT_FAILURE if found.problems else EXIT_OK


def explain(config: Config, creds: Credentials, ip: IPAddress, now: datetime) -> Explanation:
    problems: list[str] = []
    entries: tuple[BanEntry, ...] = ()
    jails: tuple[str, ...] = ()
    try:
        state = fail2ban.read_configured(config)
        jails = state.jails
        entries = tuple(e for e in state.entries if _is(e.value, ip))
    except ReconcileError as exc:
        problems.append(f"fail2ban: {exc}")
    listings: list[RuleListing] = []
    with contextlib.closing(make_backend(config, make_client(config, creds))) as backend:
        try:
            for listing in backend.covering(ip):
                listings.append(listing)
        except ReconcileError as exc:
            problems.append(f"Cloudflare: {exc}")
    policy = policy_of(config, jails)
    covering = []
    for listing in listings:
        for rule in listing.rules:
            note = parse_note(
                rule.notes, policy.tag, jails=policy.jails, tagged_only=listing.scope.kind is ScopeKind.LIST
            )
            until = None
            if note is not None and note.hosts:
                until = format_time(note.until) if note.until else "permanent"
            covering.append(Covering(rule, owner_of(rule, note), until))
    bans, _ = merge(entries)
    plan = backend.plan(bans, [], listings, policy, now)
    changes = tuple(c for c in plan.changes if c.ip in (ip, backend.planned_as(ip)))
    return Explanation(ip, entries, _status(ip, config), tuple(covering), changes, tuple(problems))


def _is(value: str, ip: IPAddress) -> bool:
    """fail2ban's raw entry names `ip` (as the run reads it: IPv6 compressed, mapped IPv4 unwrapped)."""
    return address_of(value) == ip


def _status(ip: IPAddress, config: Config) -> tuple[str, ...]:
    found = []
    if is_built_in_allowlisted(ip):
        found.append("not a global unicast address: never blocked (built-in allowlist)")
    elif is_allowlisted(ip, config.policy.allowlist):
        found.append("in [policy] allowlist: never blocked")
    if ranges.is_cloudflare(ip):
        skipped = "skipped" if config.policy.skip_cloudflare_ranges else "pushed all the same"
        found.append(f"one of Cloudflare's own addresses (ranges of {ranges.PUBLISHED}): {skipped}")
    if ranges.is_misconfiguration(ip):
        found.append(
            "a ban of it means the web server logs Cloudflare's or a tunnel's address, not visitors'"
        )
    return tuple(found) or ("a global address: blocked when banned",)


def text(found: Explanation) -> str:
    # What was not read is not "nothing": a side that could not be read is said to be unread, not empty,
    # and without both sides there is no next run to tell.
    f2b_read = not any(p.startswith("fail2ban:") for p in found.problems)
    cf_read = not any(p.startswith("Cloudflare:") for p in found.problems)
    lines = [f"{found.ip}"] + ([f"  {found.read_as}"] if found.read_as else [])
    if found.entries:
        lines.append("  banned by fail2ban:")
        for e in found.entries:
            until = format_time(e.end) if e.end else "permanent"
            lines.append(f"    jail {e.jail}: since {format_time(e.start)}, until {until}")
    elif f2b_read:
        lines.append("  not banned by fail2ban in any jail")
    lines += [f"  {s}" for s in found.status]
    if not found.rules and cf_read:
        lines.append("  no Cloudflare rule covers it")
    for c in found.rules:
        lease = f", lease until {c.until}" if c.until else ""
        lines.append(f"  rule {c.rule.id} in {c.rule.scope}: mode {c.rule.mode}, owner {c.owner}{lease}")
        lines.append(f"    notes: {c.rule.notes!r}")
    if not found.problems:
        lines.append("  next run:")
        for change in found.changes:
            lines.append(f"    {change.action} in {change.scope or '-'}: {change.reason}")
        if not found.changes:
            lines.append("    nothing: not banned here, and no rule this host manages covers it")
    lines += [f"  could not read {p}" for p in found.problems]
    return "\n".join(lines)


def to_json(found: Explanation) -> str:
    doc: dict[str, Any] = {
        "ip": found.ip.compressed,
        "read_as": found.read_as or None,
        "bans": [
            {
                "jail": e.jail,
                "since": format_time(e.start),
                "until": format_time(e.end) if e.end else "permanent",
            }
            for e in found.entries
        ],
        "status": list(found.status),
        "rules": [
            {
                "id": c.rule.id,
                "scope": str(c.rule.scope),
                "mode": c.rule.mode,
                "owner": {"kind": str(c.owner.kind), "hosts": list(c.owner.hosts)},
                "until": c.until,
                "notes": c.rule.notes,
            }
            for c in found.rules
        ],
        "next_run": [
            {
                "scope": str(c.scope) if c.scope else None,
                "action": str(c.action),
                "reason": c.reason,
                "notes": c.notes or None,
            }
            for c in found.changes
        ],
        "problems": list(found.problems),
    }
    return json.dumps(doc, indent=2)
