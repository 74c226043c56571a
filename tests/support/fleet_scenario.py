"""The fleet scenario of issue 18 on tests/support/fleet.py, and the figures it yields.

N hosts, each banning `per_host` addresses out of a shared pool of `rules` addresses (the zone holds a rule
for every pool address: a host's own, a shared one, or one of hosts outside the simulation), each on the
2-minute timer; for one simulated `duration`, 1 % churn per hour per host (new addresses banned, old bans
ending) and one burst of `burst` new bans on one host half-way through.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.fleet import (
    CloudflareModel,
    Host,
    Quota,
    SimTime,
    addresses,
    host_config,
    run_host,
    seed_note,
)

WEEK = 7 * 86400.0
TAIL = 135.0  # one timer period and its jitter


@dataclass(frozen=True)
class Scenario:
    hosts: int
    rules: int = 10_000
    per_host: int = 1_000
    duration: float = 3600.0
    churn_per_hour: float = 0.01
    burst: int = 1_000
    latency: float = 0.05
    quota: int = 1200
    window: float = 300.0
    seed: int = 18


@dataclass(frozen=True)
class Figures:
    hosts: int
    runs: int
    partial_runs: int  # exit 4: budget, time limit or a 429
    requests: int
    max_per_window: int  # the most requests in any `window` seconds
    mean_per_window: float
    limited: int  # 429s
    new_bans: int
    at_edge: int  # of the new bans, how many had a rule by the end
    p50: float | None  # seconds from a new ban (churn, not the burst) to a rule at the edge
    p99: float | None  # None: more than 1 % never got there within the simulation
    burst_p99: float | None


def simulate(scenario: Scenario, workdir: Path) -> Figures:
    # A run's INFO lines, 3,000 times over, would cost more than the runs; the level is put back after,
    # or every later test of this process would lose the warnings it looks for.
    logger = logging.getLogger("reconcile")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return _simulate(scenario, workdir)
    finally:
        logger.setLevel(level)


def _simulate(scenario: Scenario, workdir: Path) -> Figures:
    rng = random.Random(scenario.seed)
    sim = SimTime()
    model = CloudflareModel(sim, scenario.latency, Quota(scenario.quota, scenario.window))
    pool = addresses(scenario.rules, "45.0.0.0")
    names = [f"h{i}" for i in range(scenario.hosts)]
    hosts = [Host(name, host_config(workdir, name), {}) for name in names]
    for host in hosts:
        for ip in rng.sample(pool, min(scenario.per_host, len(pool))):
            start = -rng.uniform(0, 86400)
            host.bans[ip] = (start, start + WEEK)
    for ip in pool:  # the zone as the last runs left it: one up-to-date rule per address
        holders = [h for h in hosts if ip in h.bans]
        if holders:
            since = min(h.bans[ip][0] for h in holders)
            until = max(h.bans[ip][1] for h in holders)
            model.add(ip, seed_note(tuple(h.name for h in holders), since, until))
        else:
            model.add(ip, seed_note(("x0",), -3600.0, WEEK))
    model.first_rule.clear()
    fresh = (str(ipaddress.IPv4Address("46.0.0.0") + i) for i in itertools.count())  # never banned before
    new: dict[str, float] = {}  # IP -> when it was banned
    per_hour = max(1, round(scenario.per_host * scenario.churn_per_hour))
    changes = math.ceil(per_hour * scenario.duration / 3600)
    for host in hosts:
        ending = rng.sample(sorted(host.bans), min(changes, len(host.bans)))
        for ip in ending:
            host.bans[ip] = (host.bans[ip][0], rng.uniform(0, scenario.duration))
        for _ in range(changes):
            ip, at = next(fresh), rng.uniform(0, scenario.duration)
            host.bans[ip] = (at, at + WEEK)
            new[ip] = at
    burst_at = scenario.duration / 2
    burst_ips = [next(fresh) for _ in range(scenario.burst)]
    for ip in burst_ips:
        hosts[0].bans[ip] = (burst_at, burst_at + WEEK)
        new[ip] = burst_at
    # The timers go on for one more period, so that a ban of the last minutes gets its run; the request
    # figures count the simulated duration only.
    sim.run([_timer(sim, model, host, scenario.duration + TAIL) for host in hosts])
    return _figures(scenario, model, hosts, new, burst_ips)


def _timer(sim: SimTime, model: CloudflareModel, host: Host, until: float) -> Callable[[], None]:
    def timer() -> None:
        run_host(sim, model, host, until, random.Random(host.name))

    return timer


def _figures(
    scenario: Scenario, model: CloudflareModel, hosts: list[Host], new: dict[str, float], burst: list[str]
) -> Figures:
    times = sorted(t for t, _ in model.requests if t < scenario.duration)
    most, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - scenario.window:
            start += 1
        most = max(most, end - start + 1)
    waits = {ip: model.first_rule[ip] - at for ip, at in new.items() if ip in model.first_rule}
    runs = [code for host in hosts for at, code in host.exits if at < scenario.duration]
    bursted = set(burst)
    churn = {ip: at for ip, at in new.items() if ip not in bursted}  # the steady trickle of new bans
    return Figures(
        hosts=scenario.hosts,
        runs=len(runs),
        partial_runs=sum(1 for code in runs if code == 4),
        requests=len(times),
        max_per_window=most,
        mean_per_window=len(times) * scenario.window / scenario.duration,
        limited=sum(1 for t, status in model.requests if status == 429 and t < scenario.duration),
        new_bans=len(new),
        at_edge=len(waits),
        p50=_percentile({ip: w for ip, w in waits.items() if ip in churn}, churn, 50),
        p99=_percentile({ip: w for ip, w in waits.items() if ip in churn}, churn, 99),
        burst_p99=_percentile({ip: waits[ip] for ip in burst if ip in waits}, dict.fromkeys(burst, 0.0), 99),
    )


def _percentile(waits: dict[str, float], wanted: dict[str, float], q: float) -> float | None:
    """Nearest rank over every wanted ban, a ban that never reached the edge counting as infinitely late."""
    if not wanted:
        return None
    ordered = sorted(waits.values()) + [math.inf] * (len(wanted) - len(waits))
    value = ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]
    return None if math.isinf(value) else value
