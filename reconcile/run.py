"""One reconcile run, end to end: read both sides, plan, check safety, apply (DESIGN §1).

The thin action that wires the edges (fail2ban.py, cloudflare.py) to the pure core (plan, safety, apply).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reconcile import bans as bans_mod
from reconcile import fail2ban
from reconcile.apply import Applied, Result, apply
from reconcile.cloudflare import Client, IncompleteListing
from reconcile.config import Config
from reconcile.credentials import Credentials
from reconcile.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_UNSAFE,
    BudgetExhausted,
    RateLimited,
    ReconcileError,
)
from reconcile.model import Fail2banState, RuleListing, Scope
from reconcile.pacing import Pacer
from reconcile.plan import Plan, Policy, make_plan
from reconcile.render import Stats
from reconcile.safety import unsafe_reasons

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    report: bool = False
    force: bool = False


@dataclass
class Outcome:
    """Everything a run learned and did, for the renderers, the metrics and the exit code."""

    exit_code: int
    state: Fail2banState | None = None
    plan: Plan | None = None
    applied: Applied | None = None
    unsafe: list[str] = field(default_factory=list)
    error: ReconcileError | None = None
    stats: Stats = field(default_factory=lambda: Stats(0, 0.0))
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


def scopes_of(config: Config) -> list[Scope]:
    if config.account_id:
        return [Scope("account", config.account_id)]
    return [Scope("zone", zone) for zone in config.zone_ids]


def policy_of(config: Config) -> Policy:
    return Policy(
        tag=config.tag,
        host_id=config.host_id,
        mode=config.mode,
        allowlist=config.allowlist,
        max_rule_age=config.max_rule_age,
    )


def make_client(config: Config, credentials: Credentials, pacer: Pacer, **options: Any) -> Client:
    """The client a run uses; `options` (sleep, per_page, session) are for tests."""
    return Client(
        config.api_base_url,
        credentials,
        pacer=pacer,
        timeout=config.http_timeout,
        retries=config.retries,
        **options,
    )


def list_scope(client: Client, scope: Scope) -> RuleListing:
    """Every rule of a scope; an unreadable page marks the listing incomplete (no expiries).

    Not filtered on notes: an operator's untagged rule for a banned address must be seen, or every run
    would find it only by a create that answers 10009 (DESIGN §3). The planner tells ours from theirs.
    """
    try:
        return RuleListing(scope, tuple(client.list_rules(scope)))
    except IncompleteListing as exc:
        if not exc.rules:
            # Not even the first page: Cloudflare is unreachable or refuses us, and every write would too.
            raise exc.cause from None
        log.error("%s", exc)
        return RuleListing(scope, exc.rules, complete=False)


def execute(
    config: Config,
    credentials: Credentials,
    options: Options,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    pacer: Pacer | None = None,
    client_factory: Callable[[Config, Credentials, Pacer], Client] = make_client,
) -> Outcome:
    started = time.monotonic()
    # Created first, so the run's time limit covers the fail2ban read too.
    pacer = pacer or Pacer(config.requests_per_minute, config.max_requests_per_run, config.max_seconds)
    # fail2ban first: if it cannot be read, nothing is asked of Cloudflare, let alone deleted.
    state = fail2ban.read_state(config.fail2ban_command, config.jails, config.fail2ban_timeout)
    bans, invalid = bans_mod.merge(state.entries)
    for entry in invalid:
        log.warning("skipping %r banned in %s: not a single IP address", entry.value, entry.jail)
    log.debug(
        "fail2ban: %d jails, %d entries, %d distinct IPs", len(state.jails), len(state.entries), len(bans)
    )

    outcome = Outcome(EXIT_OK, state=state)
    with client_factory(config, credentials, pacer) as client:

        def stats() -> Stats:
            return Stats(client.requests, time.monotonic() - started, client.rate_limited)

        try:
            listings = [list_scope(client, scope) for scope in scopes_of(config)]
        except (RateLimited, BudgetExhausted) as exc:
            # Without a full picture nothing is planned: the next run starts over.
            outcome.exit_code, outcome.error, outcome.stats = exc.exit_code, exc, stats()
            return outcome
        outcome.now = clock()
        plan = make_plan(bans, invalid, listings, policy_of(config), outcome.now)
        outcome.plan = plan
        for change in plan.changes:
            log.debug(
                "plan: %s %s in %s: %s", change.action, change.value, change.scope or "-", change.reason
            )
        outcome.unsafe = unsafe_reasons(plan, config.max_expire_fraction)
        incomplete = EXIT_FAILURE if plan.incomplete else EXIT_OK

        if options.report:
            outcome.exit_code = EXIT_UNSAFE if outcome.unsafe and not options.force else incomplete
            outcome.stats = stats()
            return outcome
        if outcome.unsafe and not options.force:
            outcome.exit_code, outcome.stats = EXIT_UNSAFE, stats()
            return outcome
        if outcome.unsafe:
            log.warning("--force: %s", "; ".join(outcome.unsafe))

        applied = apply(plan, client, config.mode)
        outcome.applied = applied
        outcome.stats = stats()
        if applied.count(Result.FAILED) or plan.incomplete:
            outcome.exit_code = EXIT_FAILURE
        elif applied.stopped is not None:
            outcome.exit_code, outcome.error = EXIT_PARTIAL, applied.stopped
        return outcome
