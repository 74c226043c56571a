"""One reconcile run, end to end: read both sides, plan, check safety, apply (DESIGN §1).

The thin action that wires the edges (fail2ban/, a cloudflare backend) to the pure core (core/: the planner,
the safety guard).
Which resource holds the blocks, and how it is listed and written, is the backend's business.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from reconcile.catch_up import catch_up
from reconcile.cloudflare.answers import Quota
from reconcile.cloudflare.backend import Backend
from reconcile.cloudflare.credentials import Credentials
from reconcile.cloudflare.open import RULES_MODULE, make_backend, make_client, make_pacer, policy_of
from reconcile.cloudflare.pacing import Pacer
from reconcile.config import Config
from reconcile.core import ranges
from reconcile.core.applied import Applied, Result
from reconcile.core.changes import Plan
from reconcile.core.merge import merge
from reconcile.core.model import Ban, BanEntry, Fail2banState
from reconcile.core.networks import with_networks
from reconcile.core.render import Stats
from reconcile.core.safety import unsafe_reasons
from reconcile.enrich import asn
from reconcile.enrich.asn import Enrichment
from reconcile.errors import EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL, EXIT_UNSAFE, ReconcileError
from reconcile.fail2ban import state as fail2ban

if TYPE_CHECKING:
    from reconcile.cloudflare.rules import Client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    report: bool = False
    force: bool = False


@dataclass(frozen=True)
class Outcome:
    """Everything a run learned and did, for the renderers, the metrics and the exit code. Built once."""

    now: datetime
    state: Fail2banState | None = None
    plan: Plan | None = None
    applied: Applied | None = None  # None: nothing was applied (a report, a refusal, an error)
    unsafe: tuple[str, ...] = ()
    error: ReconcileError | None = None  # what stopped the run before or instead of applying
    stats: Stats = field(default_factory=lambda: Stats(0, 0.0))
    forced: bool = False
    enrichment: Enrichment | None = None  # the run's AS lookup, when [enrich] asn is on
    names: Mapping[str, str] = field(default_factory=dict)  # AS number -> AS name, for the report
    # Zones where what was written blocks nobody (the list backend's WAF rule is missing), with the fix.
    unenforced: tuple[str, ...] = ()
    # The account's API quota as the run's last answer stated it (DESIGN §12); None: no answer said.
    quota: Quota | None = None

    @property
    def refused(self) -> bool:
        return bool(self.unsafe) and not self.forced

    @property
    def exit_code(self) -> int:
        return exit_code(self)


def exit_code(outcome: Outcome) -> int:
    """The documented exit code of a run (DESIGN §7), from what it did; pure."""
    if outcome.error is not None:
        return outcome.error.exit_code
    plan, applied = outcome.plan, outcome.applied
    if plan is None:
        return EXIT_OK
    if outcome.refused:
        return EXIT_UNSAFE
    if plan.incomplete or outcome.unenforced or (applied is not None and applied.count(Result.FAILED)):
        return EXIT_FAILURE
    if applied is not None and applied.stopped is not None:
        return EXIT_PARTIAL
    return EXIT_OK


def preload(module: str) -> threading.Thread:
    """Import `module` in a thread of its own; a failure is left to the import that needs the module."""

    def load() -> None:
        with contextlib.suppress(Exception):
            importlib.import_module(module)

    thread = threading.Thread(target=load, name=f"import {module}")
    thread.start()
    return thread


def merged(state: Fail2banState) -> tuple[list[Ban], list[BanEntry]]:
    """fail2ban's entries merged into bans (core.merge), and what the run says of them."""
    bans, invalid = merge(state.entries)
    for entry in invalid:
        log.warning("skipping %r banned in %s: not a single IP address", entry.value, entry.jail)
    log.debug(
        "fail2ban: %d jails, %d entries, %d distinct IPs", len(state.jails), len(state.entries), len(bans)
    )
    warn_misconfiguration(bans)
    return bans, invalid


def warn_misconfiguration(bans: Sequence[Ban]) -> None:
    """One loud warning per run when fail2ban bans Cloudflare or loopback: the web server is misconfigured."""
    examples = ranges.misconfigured_examples(bans)
    if examples:
        log.warning("%s", ranges.misconfiguration_warning(examples))


def enrich(
    config: Config, plan: Plan, now: datetime, pacer: Pacer, *, read_only: bool = False
) -> tuple[Plan, Enrichment, Mapping[str, str]]:
    """The plan with the origin AS of every address about to be written, looked up in bulk (DESIGN §10).

    Bounded by [enrich] timeout and what is left of the run's time limit; a failed lookup only means
    rules without `asn`, never a delay past that or a different exit code.
    """
    wanted = [c.ip for c in plan.writes() if c.ip is not None and c.lease is not None]
    found = asn.enrich(
        wanted,
        host=config.enrich.whois_server.host,
        port=config.enrich.whois_server.port,
        timeout=min(config.enrich.timeout, pacer.remaining()),
        cache_file=config.enrich.cache_file,
        ttl=config.enrich.cache_ttl,
        now=now,
        save=not read_only,  # --report writes nothing anywhere (DESIGN §7)
    )
    if found.warning:
        log.warning("%s", found.warning)
    known = {ip: (info.asn, info.cc) for ip, info in found.infos.items() if info.asn is not None}
    return with_networks(plan, known, config.cloudflare.tag), found, found.names


def execute(
    config: Config,
    credentials: Credentials,
    options: Options,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    pacer: Pacer | None = None,
    client_factory: Callable[[Config, Credentials, Pacer], Client] = make_client,
    backend_factory: Callable[[Config, Credentials, Pacer], Backend] | None = None,
    read: Callable[[Config], Fail2banState] = fail2ban.read_configured,
) -> Outcome:
    """One run. `backend_factory` (default: make_backend over `client_factory`'s client) and `read` are
    the seams tests use: an in-memory backend, a fail2ban state without a server."""
    # Created first, so the run's time limit covers the fail2ban read too; its clock is the run's.
    pacer = pacer or make_pacer(config)
    # fail2ban first: if it cannot be read, nothing is asked of Cloudflare, let alone deleted. Meanwhile the
    # Cloudflare client's modules load (a tenth of a second of a run, mostly `requests`): the process only
    # waits for fail2ban-client then. Nothing is sent; the import is all the thread does.
    preload(RULES_MODULE)
    state = read(config)

    if backend_factory is None:

        def backend_factory(config: Config, credentials: Credentials, pacer: Pacer) -> Backend:
            return make_backend(config, client_factory(config, credentials, pacer))

    with (
        contextlib.closing(backend_factory(config, credentials, pacer)) as backend,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="merge") as pool,
    ):
        # fail2ban has answered: its entries are merged (CPU, bounded: a tenth of a second for 40,000 bans)
        # in a thread while this one lists Cloudflare (mostly waiting on its answers). The listing stays
        # here, where Ctrl-C stops it at once; leaving the pool waits for the merge alone.
        merging = pool.submit(merged, state)

        def stats() -> Stats:
            return Stats(backend.requests, pacer.elapsed(), backend.rate_limited)

        try:
            listings = backend.listings(read_only=options.report)
            bans, invalid = merging.result()
            now = clock()
            policy = policy_of(config, state.jails)
            plan = backend.plan(bans, invalid, listings, policy, now)
            enrichment: Enrichment | None = None
            names: Mapping[str, str] = {}
            if config.enrich.asn:
                plan, enrichment, names = enrich(config, plan, now, pacer, read_only=options.report)
            if log.isEnabledFor(logging.DEBUG):  # not a call per change (40,000 for a report) for nothing
                for change in plan.changes:
                    log.debug(
                        "plan: %s %s in %s: %s",
                        change.action,
                        change.value,
                        change.scope or "-",
                        change.reason,
                    )
            unsafe = tuple(unsafe_reasons(plan, config.policy.max_expire_fraction))
            outcome = Outcome(
                now, state, plan, unsafe=unsafe, forced=options.force, enrichment=enrichment, names=names
            )
            if options.report or outcome.refused:
                return replace(outcome, stats=stats(), quota=pacer.quota)
            if unsafe:
                log.warning("--force: %s", "; ".join(unsafe))
            applied = backend.apply(plan)
            if applied.stopped is None:  # a ban fail2ban stored meanwhile: in this run, not the next
                first = (bans, plan, applied)
                plan, applied = catch_up(
                    config, read, backend, first, listings, policy, clock, pacer.remaining
                )
                outcome = replace(outcome, plan=plan)
            # After the writes: a missing WAF rule must not keep the list from being synced (DESIGN §9).
            unenforced = () if applied.stopped is not None else backend.enforcement()
            for problem in unenforced:
                log.error("%s", problem)
            return replace(outcome, applied=applied, unenforced=unenforced, stats=stats(), quota=pacer.quota)
        except ReconcileError as exc:
            # Without a full picture nothing is planned, and the next run starts over; the outcome still
            # says how many requests this one made.
            return Outcome(clock(), state, error=exc, stats=stats(), quota=pacer.quota)
