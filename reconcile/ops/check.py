"""`reconcile --check` (DESIGN §7): is this set-up right? One line per check; nothing is changed.

Each check returns Check values (ok / warn / fail, what it found, what to do). Exit 0 with no `fail`,
else 1. Only reads: fail2ban-client queries, Cloudflare GETs, and stat/access on local paths.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from reconcile import lock
from reconcile.cloudflare import permissions
from reconcile.cloudflare.backend import Backend, Found, ListFound, ScopeFound, ZoneEnforcement
from reconcile.cloudflare.credentials import Credentials
from reconcile.cloudflare.open import make_backend, make_client
from reconcile.cloudflare.rules import Client
from reconcile.config import Config
from reconcile.core import ranges
from reconcile.core.merge import merge
from reconcile.core.model import Fail2banState, Scope, ScopeKind
from reconcile.core.sanitize import escape
from reconcile.enrich.cache import location_problem as cache_problem
from reconcile.errors import EXIT_FAILURE, EXIT_OK, CloudflareError, ReconcileError
from reconcile.fail2ban import state as fail2ban
from reconcile.ops import schedule

MIGRATION = "README, 'Migrating from the per-ban curl scripts'"
MAX_SKEW = timedelta(seconds=60)
TOKEN_SOON = timedelta(days=14)
NEAR_FULL = 0.9  # the account's lists hold this share of list_capacity: warn before adds are skipped
CLOUDFLARE_API = "api.cloudflare.com"


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    status: Status
    name: str
    found: str
    todo: str = ""


def main(config: Config, creds: Credentials, fmt: str, *, now: datetime | None = None) -> int:
    checks = run_checks(config, creds, now or datetime.now(UTC))
    # Found texts quote other writers (WAF rules, server errors): escaped for the terminal (DESIGN §12).
    print(to_json(checks) if fmt == "json" else escape(table(checks)))
    return EXIT_FAILURE if any(c.status is Status.FAIL for c in checks) else EXIT_OK


def table(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{c.status:<4}  {c.name:<{width}}  {c.found}")
        if c.todo:
            lines.append(f"{'':<4}  {'':<{width}}  -> {c.todo}")
    return "\n".join(lines)


def to_json(checks: list[Check]) -> str:
    return json.dumps(
        {
            "ok": not any(c.status is Status.FAIL for c in checks),
            "checks": [{**asdict(c), "status": str(c.status)} for c in checks],
        },
        indent=2,
    )


def run_checks(config: Config, creds: Credentials, now: datetime) -> list[Check]:
    checks = [Check(Status.OK, "config", f"{config.path} loaded (host_id {config.policy.host_id})")]
    state, fail2ban_checks = _fail2ban(config)
    checks += fail2ban_checks
    checks += _paths(config)
    checks.append(_schedule(schedule.find()))
    client = make_client(config, creds)
    with contextlib.closing(make_backend(config, client)) as backend:
        checks += _cloudflare(creds, client, backend, now)
        if config.cloudflare.backend == "list" and config.cloudflare.waf_rule != "off":
            checks += [_retirement(client, zone) for zone in config.cloudflare.zone_ids]
        checks.append(_quota(client))
    if state is not None:
        checks += _misconfiguration(state)
    return checks


# --- fail2ban ----------------------------------------------------------------------------------------


def _fail2ban(config: Config) -> tuple[Fail2banState | None, list[Check]]:
    try:
        state = fail2ban.read_configured(config)
    except ReconcileError as exc:
        return None, [Check(Status.FAIL, "fail2ban", str(exc), "start fail2ban, or fix [fail2ban] command")]
    checks = [Check(Status.OK, "fail2ban", f"{len(state.jails)} jails, {len(state.entries)} bans read")]
    writers = []
    try:
        for jail in state.jails:
            for action in fail2ban.read_actions(config.fail2ban.command, jail, config.fail2ban.timeout):
                texts = [t for t in (action.actionban, action.actionunban) if t]
                if any(CLOUDFLARE_API in t for t in texts):
                    writers.append(f"jail {jail}, action {action.name}")
    except ReconcileError as exc:
        checks.append(Check(Status.WARN, "fail2ban actions", f"could not read every jail's actions: {exc}"))
        return state, checks
    if writers:
        checks.append(
            Check(
                Status.FAIL,
                "fail2ban actions",
                f"a second writer calls {CLOUDFLARE_API} itself: {'; '.join(writers)}",
                f"switch those jails to the no-op action cloudflare-reconcile ({MIGRATION})",
            )
        )
    else:
        checks.append(Check(Status.OK, "fail2ban actions", f"no jail's action calls {CLOUDFLARE_API}"))
    return state, checks


def _misconfiguration(state: Fail2banState) -> list[Check]:
    examples = ranges.misconfigured_examples(merge(state.entries)[0])
    if not examples:
        return [Check(Status.OK, "visitor addresses", "no ban of a Cloudflare or loopback address")]
    return [Check(Status.WARN, "visitor addresses", ranges.misconfiguration_warning(examples))]


# --- local paths -------------------------------------------------------------------------------------


def _writable_dir(path: Path) -> str | None:
    """None when a file can be created in `path`'s directory (or the directory created); else why not."""
    directory = path.parent
    while not directory.exists():
        if directory.parent == directory:
            return f"no existing parent of {path.parent}"
        directory = directory.parent
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"{directory} is not writable by this user"
    return None


def _paths(config: Config) -> list[Check]:
    wanted: list[tuple[str, Path, str]] = [("lock", config.run.lock_file, "[run] lock_file")]
    if config.metrics.textfile is not None:
        wanted.append(("metrics", config.metrics.textfile, "[metrics] textfile"))
    if config.enrich.asn:
        wanted.append(("ASN cache", config.enrich.cache_file, "[enrich] cache_file"))
    checks = []
    for name, path, key in wanted:
        if key == "[run] lock_file":
            problem = lock.location_problem(path)
        else:  # a cache others could plant is refused by a run: say so here (DESIGN §12)
            problem = (cache_problem(path) if name == "ASN cache" else None) or _writable_dir(path)
        if problem is None:
            checks.append(Check(Status.OK, f"{name} path", f"{path} can be written"))
        else:
            checks.append(Check(Status.FAIL, f"{name} path", problem, f"fix {key}, or run as root"))
    return checks


def _schedule(found: schedule.Schedule) -> Check:
    return Check(Status.OK if found.scheduled else Status.WARN, "schedule", found.found, found.todo)


# --- Cloudflare --------------------------------------------------------------------------------------


def _cloudflare(creds: Credentials, client: Client, backend: Backend, now: datetime) -> list[Check]:
    """The token, then what the backend finds (each scope's rules, or the list and its WAF rule)."""
    checks = [_token(creds, client, now)]
    if checks[0].status is Status.FAIL:
        return checks
    checks += _backend_checks(backend)
    checks.append(_attempt("Cloudflare ranges", lambda: _ranges(client)))
    # Last: by now some answer carried a Date header, whatever the credentials.
    checks.insert(1, _skew(client, now))
    return checks


def _backend_checks(backend: Backend) -> list[Check]:
    """What the backend finds, in order: each scope's rules, or the list, then each zone's WAF rule."""
    try:
        checks = [_found(found) for found in backend.existing()]
    except ReconcileError as exc:
        return [_unreadable("Cloudflare rules", str(exc))]
    try:
        return checks + [_waf(status) for status in backend.enforcement_status()]
    except ReconcileError as exc:  # the budget, the time limit or the quota stopped it: a line, not the end
        return [*checks, _unreadable("WAF rule", str(exc))]


def _attempt(name: str, check: Callable[[], Check]) -> Check:
    try:
        return check()
    except ReconcileError as exc:
        return _unreadable(name, str(exc))


def _unreadable(name: str, error: str) -> Check:
    return Check(Status.FAIL, name, error, permissions.hint(error))


def _token(creds: Credentials, client: Client, now: datetime) -> Check:
    if creds.token is None:
        return Check(
            Status.WARN,
            "token",
            "a global API key is configured, not a scoped token",
            "create an API token with only the permissions of README §2",
        )
    try:
        status = client.verify_token()
    except ReconcileError as exc:
        return Check(Status.FAIL, "token", str(exc), "check the token and [cloudflare] api_base_url")
    expires = status.expires_on
    when = f", expires {expires:%Y-%m-%d %H:%M}Z" if expires else ""
    if status.status != "active":
        return Check(
            Status.FAIL, "token", f"token is {status.status}{when}", "create a new token (README §2)"
        )
    if expires is not None and expires <= now:
        return Check(Status.FAIL, "token", f"token expired {expires:%Y-%m-%d}", "create a new token")
    if expires is not None and expires - now < TOKEN_SOON:
        return Check(Status.WARN, "token", f"token is active{when}", "renew it before it expires")
    return Check(Status.OK, "token", f"token is active{when}")


def _skew(client: Client, now: datetime) -> Check:
    their = client.last_date
    if their is None:
        return Check(Status.WARN, "clock", "Cloudflare sent no Date header: clock skew not checked")
    skew = (datetime.now(UTC) - their).total_seconds()
    text = f"this clock is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} Cloudflare's"
    if abs(skew) > MAX_SKEW.total_seconds():
        return Check(Status.WARN, "clock", text, "leases are UTC times: sync the clock (NTP)")
    return Check(Status.OK, "clock", text)


def _found(found: Found) -> Check:
    return _list(found) if isinstance(found, ListFound) else _scope(found)


def _scope(found: ScopeFound) -> Check:
    scope, listing = found.scope, found.listing
    if listing is None:
        return _unreadable(f"{scope.kind} rules", found.error)
    state = "" if listing.complete else " (listing incomplete)"
    status = Status.OK if listing.complete else Status.WARN
    return Check(status, f"{scope.kind} rules", f"{scope.id}: {len(listing.rules)} rules readable{state}")


def _list(listed: ListFound) -> Check:
    listing, name = listed.listing, listed.name
    if listed.error:
        return _unreadable("IP list", listed.error)
    if listing is None:
        return Check(
            Status.WARN,
            "IP list",
            f"account {listed.account_id} has no list {name!r} yet",
            "nothing to do: the first run creates it",
        )
    count, capacity = len(listing.rules), listed.capacity
    elsewhere = sum(n for _, n in listed.others)
    room = max(0, capacity - elsewhere)
    found = f"list {name!r}: {count} items readable, room for {room}"
    if elsewhere:
        found += f" ({capacity} for the account, less {elsewhere} in its other lists)"
    if not listing.complete:
        return Check(Status.WARN, "IP list", found + " (listing incomplete)")
    if count + elsewhere >= NEAR_FULL * capacity:
        users = sorted([(name, count), *listed.others], key=lambda u: -u[1])
        named = ", ".join(f"{n!r} {c}" for n, c in users if c)
        return Check(
            Status.WARN,
            "IP list",
            f"{found}: the account's lists are {'full' if count + elsewhere >= capacity else 'nearly full'}"
            f" ({count + elsewhere} of {capacity} items: {named}); new bans that do not fit are skipped",
            "free room in the other lists, or raise [cloudflare] list_capacity if the plan allows",
        )
    return Check(Status.OK, "IP list", found)


def _waf(status: ZoneEnforcement) -> Check:
    if status.problems:
        todo = 'add that rule, or set [cloudflare] waf_rule = "create"'
        if status.error:  # the hint comes from the failed request, never from rule text in a problem
            todo = permissions.hint(status.error)
        return Check(Status.FAIL, "WAF rule", "; ".join(status.problems), todo)
    rule = f"(ip.src in ${status.list_name}), action {status.mode}"
    return Check(Status.OK, "WAF rule", f"zone {status.zone} enforces the list: {rule}")


def _retirement(client: Client, zone: str) -> Check:
    """The read a list run makes to retire this host's old IP Access Rules: optional, so a 403 warns."""
    path = Scope(ScopeKind.ZONE, zone).rules_path
    try:
        client.call("GET", path, query={"page": "1", "per_page": "5"})
    except ReconcileError as exc:
        if isinstance(exc, CloudflareError) and exc.status == 403:
            return Check(
                Status.WARN,
                "old IP Access Rules",
                f"zone {zone}: not readable (HTTP 403): this host's old rules there are not retired",
                f"{permissions.hint(str(exc))}; without it each run warns once and syncs the list",
            )
        return _unreadable("old IP Access Rules", str(exc))
    return Check(Status.OK, "old IP Access Rules", f"zone {zone}: readable, so they can be retired")


def _quota(client: Client) -> Check:
    """The account's API quota, as the last answer stated it (DESIGN §12)."""
    quota = client.quota
    if quota is None:
        return Check(Status.OK, "API quota", "Cloudflare's answers did not state it: paced by the rate alone")
    limit = quota.limit
    of = f" of {limit}" if limit is not None else ""
    found = f"{quota.remaining}{of} requests left, resets in {quota.reset:.0f} s"
    if limit is not None and quota.remaining < client.pacer.quota_reserve * limit:
        return Check(
            Status.WARN,
            "API quota",
            found + ": below the reserve, so runs wait or stop (exit 4)",
            "something else of the account spends it (other hosts, tools, the dashboard): it is per user",
        )
    return Check(Status.OK, "API quota", found)


def _ranges(client: Client) -> Check:
    v4, v6 = client.cloudflare_ips()
    differences = ranges.differences(v4, v6)
    if differences:
        return Check(
            Status.WARN,
            "Cloudflare ranges",
            f"the ranges shipped ({ranges.PUBLISHED}) differ from GET /ips: {'; '.join(differences)}",
            "upgrade reconcile; until then bans in the new ranges are pushed like any other",
        )
    return Check(Status.OK, "Cloudflare ranges", f"the shipped ranges ({ranges.PUBLISHED}) match GET /ips")
