"""Prometheus metrics of the last run, for node_exporter's textfile collector ([metrics] textfile).

render() is pure; write_textfile() replaces the file atomically, so the collector never reads half a file.
The text format comes from prometheus_client (escaping, HELP/TYPE lines); only its metric families are
used, never its global registry or value classes (which change behaviour under PROMETHEUS_MULTIPROC_DIR).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from reconcile import __version__
from reconcile.atomic import write_atomically
from reconcile.config import Config
from reconcile.core.applied import Result
from reconcile.core.changes import WRITE_ORDER, Capacity
from reconcile.run import Outcome

log = logging.getLogger(__name__)

# Always present, 0 when empty, so a series does not vanish between runs (Owner.label's values): "ours"
# when this host is in the rule's host set, "others" when only other hosts are.
OWNERS = ("ours", "others", "legacy", "unknown", "untagged", "allow")
FILE_MODE = 0o644
ASN_RESULTS = ("ok", "partial", "failed", "skipped")


class _Families:
    """The minimal collector prometheus_client's generate_latest() asks for."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def _gauge(name: str, documentation: str, value: float) -> Metric:
    return GaugeMetricFamily(name, documentation, value=value)


def _labelled(
    name: str, documentation: str, labels: list[str], samples: dict[tuple[str, ...], int]
) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for values, count in sorted(samples.items()):
        family.add_metric(list(values), count)
    return family


def families(outcome: Outcome, config: Config, now: datetime) -> list[Metric]:
    """The metric families of one run. A side the run never read (e.g. fail2ban failed) has no samples."""
    stats = outcome.stats
    bans: dict[tuple[str, ...], int] = {}
    if outcome.state is not None:
        bans = {(jail,): 0 for jail in outcome.state.jails}
        bans.update(Counter((entry.jail,) for entry in outcome.state.entries))
    rules: dict[tuple[str, ...], int] = {}
    planned: dict[tuple[str, ...], int] = {}
    applied: dict[tuple[str, ...], int] = {}
    pending = 0
    over_capacity = 0
    plan = outcome.plan
    if plan is not None:
        over_capacity = sum(1 for c in plan.changes if c.capacity is Capacity.OVER)
        rules = {(owner,): 0 for owner in OWNERS}
        rules.update(
            Counter((c.owner.label(config.policy.host_id),) for c in plan.changes if c.owner is not None)
        )
        planned = {(str(action),): count for action, count in plan.counts().items()}
        if outcome.applied is not None:
            applied = {(str(a), str(r)): outcome.applied.count(r, a) for a in WRITE_ORDER for r in Result}
            pending = outcome.applied.count(Result.PENDING) + outcome.applied.count(Result.FAILED)
        else:
            pending = len(plan.writes())  # planned, never applied: refused as unsafe (or a --report)
    families = [
        _labelled(
            "reconcile_info",
            "Version and host id of the reconciler",
            ["version", "host"],
            {(__version__, config.policy.host_id): 1},
        ),
        _gauge(
            "reconcile_last_run_timestamp_seconds", "When the last run ended (Unix time)", now.timestamp()
        ),
        _gauge("reconcile_last_run_success", "1 if the last run exited 0, else 0", outcome.exit_code == 0),
        _gauge(
            "reconcile_last_run_exit_code",
            "Exit code of the last run: 0 done, 1 failure, 2 configuration, 3 unsafe plan refused, 4 partial",
            outcome.exit_code,
        ),
        _gauge("reconcile_last_run_duration_seconds", "Duration of the last run", stats.seconds),
        _gauge("reconcile_api_requests", "Cloudflare API requests made by the last run", stats.requests),
        _gauge(
            "reconcile_api_rate_limited",
            "HTTP 429 answers from Cloudflare in the last run",
            stats.rate_limited,
        ),
        _labelled("reconcile_bans", "Bans fail2ban reported per jail (raw entries)", ["jail"], bans),
        _labelled(
            "reconcile_rules",
            "Cloudflare rules the last run listed for banned or managed IPs, by owner",
            ["owner"],
            rules,
        ),
        _labelled(
            "reconcile_changes_planned", "Changes the last run planned, by action", ["action"], planned
        ),
        _labelled(
            "reconcile_changes_applied",
            "Writes the last run attempted, by action and result",
            ["action", "result"],
            applied,
        ),
        _gauge(
            "reconcile_pending_changes",
            "Planned writes not done (not reached, failed or refused): left for the next run",
            pending,
        ),
        _gauge(
            "reconcile_over_capacity",
            "Bans the last run did not push because the IP list was full (backend list; newest bans win)",
            over_capacity,
        ),
    ]
    quota = outcome.quota
    if quota is not None:  # only what an answer stated: no sample rather than a made-up one
        families.append(
            _gauge(
                "reconcile_api_quota_remaining",
                "Requests left of the account's API quota (Ratelimit r) at the last run's last answer",
                quota.remaining,
            )
        )
        families.append(
            _gauge(
                "reconcile_api_quota_reset_seconds",
                "Seconds until the account's API quota window reset (Ratelimit t), at that answer",
                quota.reset,
            )
        )
        if quota.limit is not None:
            families.append(
                _gauge(
                    "reconcile_api_quota_limit",
                    "The account's API quota per window (Ratelimit-Policy q), as the last answer stated it",
                    quota.limit,
                )
            )
    found = outcome.enrichment
    if found is not None:
        families.append(
            _labelled(
                "reconcile_asn_lookups_total",
                "The last run's ASN lookup, by result (1 for the result it had)",
                ["result"],
                {(result,): int(found.result == result) for result in ASN_RESULTS},
            )
        )
        if found.hit_ratio is not None:
            families.append(
                _gauge(
                    "reconcile_asn_cache_hit_ratio",
                    "Share of the last run's addresses to enrich that the ASN cache answered",
                    found.hit_ratio,
                )
            )
    return families


def render(outcome: Outcome, config: Config, now: datetime) -> str:
    """The Prometheus text exposition format (version 0.0.4) of one run."""
    return generate_latest(_Families(families(outcome, config, now))).decode("utf-8")


def write_textfile(path: Path, text: str) -> None:
    """Replace `path` atomically, mode 0644; the temp name does not end in .prom, so the textfile
    collector never reads it. OSError on failure (the old file is then untouched)."""
    write_atomically(path, text, FILE_MODE)


def publish(outcome: Outcome, config: Config, now: datetime | None = None) -> None:
    """Write the metrics file if one is configured; a failure to write is a warning, never the run's fate."""
    if config.metrics.textfile is None:
        return
    try:
        write_textfile(config.metrics.textfile, render(outcome, config, now or datetime.now(UTC)))
    except OSError as exc:
        log.warning("metrics: cannot write %s: %s", config.metrics.textfile, exc.strerror or exc)
