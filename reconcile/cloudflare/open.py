"""Opening the edge from the configuration: the pacing, the client (the transport) and the backend that
`[cloudflare] backend` names, built here once for a run, `--check` and `--explain` alike (DESIGN §7).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from reconcile.cloudflare.backend import Backend
from reconcile.cloudflare.credentials import Credentials
from reconcile.cloudflare.pacing import Pacer
from reconcile.config import Config
from reconcile.core import ranges
from reconcile.core.changes import Policy
from reconcile.core.model import Scope, ScopeKind

if TYPE_CHECKING:
    from reconcile.cloudflare.rules import Client

# The client and the backends (and `requests` under them) are imported when first made, not with this module:
# a run imports them while it waits for fail2ban (run.preload), not before it starts reading.
RULES_MODULE = "reconcile.cloudflare.rules"


def make_pacer(
    config: Config,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Pacer:
    """The rate, the quota's reserve, the request budget and the time limit of one run; the limit counts
    from now. `clock` and `sleep` are the whole run's (a simulation passes its own)."""
    return Pacer(
        config.cloudflare.requests_per_minute,
        config.cloudflare.max_requests_per_run,
        config.run.max_seconds,
        clock,
        sleep,
        quota_reserve=config.cloudflare.quota_reserve,
    )


def make_client(
    config: Config, credentials: Credentials, pacer: Pacer | None = None, **options: Any
) -> Client:
    """The client every backend talks through; paced by `pacer`, else by a new one that starts now.

    `options` (sleep, per_page, pages_at_once, session) are for tests and the fleet simulation.
    """
    from reconcile.cloudflare.rules import Client

    return Client(
        config.cloudflare.api_base_url,
        credentials,
        pacer=pacer or make_pacer(config),
        timeout=config.cloudflare.timeout,
        retries=config.cloudflare.retries,
        **options,
    )


def make_backend(config: Config, client: Client) -> Backend:
    """The backend `[cloudflare] backend` names, over `client` (its transport)."""
    if config.cloudflare.backend == "list":
        from reconcile.cloudflare.lists import ListBackend  # only the list backend's runs need it

        return ListBackend(client, config)
    from reconcile.cloudflare.rules import RulesBackend

    return RulesBackend(client, _scopes_of(config), config.cloudflare.mode)


def _scopes_of(config: Config) -> list[Scope]:
    if config.cloudflare.account_id:
        return [Scope(ScopeKind.ACCOUNT, config.cloudflare.account_id)]
    return [Scope(ScopeKind.ZONE, zone) for zone in config.cloudflare.zone_ids]


def policy_of(config: Config, jails: Collection[str]) -> Policy:
    """What the backend plans with: how this host's rules are written, and what is never blocked.

    `jails` are the jails read from this fail2ban: `Fail2Ban <jail>` notes are adopted only for them.
    """
    return Policy(
        tag=config.cloudflare.tag,
        host_id=config.policy.host_id,
        mode=config.cloudflare.mode,
        allowlist=config.policy.allowlist,
        max_rule_age=config.policy.max_rule_age,
        cloudflare_ranges=ranges.ALL if config.policy.skip_cloudflare_ranges else (),
        jails=frozenset(jails),
    )
