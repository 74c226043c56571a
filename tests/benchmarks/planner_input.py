"""The planner benchmark's input (figure 4), and the child process that measures it.

`python -m tests.benchmarks.planner_input CASE RUNS` builds the input, plans RUNS times, then once more under
tracemalloc, and prints JSON: each run's seconds, the process's RSS before planning and its peak (VmHWM)
before the traced pass, and tracemalloc's peak. A process of its own, as each run of the product is: in the
benchmark's process the peak RSS would be whatever an earlier benchmark left.
"""

from __future__ import annotations

import ipaddress
import json
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconcile.core import ranges
from reconcile.core.changes import Policy
from reconcile.core.model import Ban, Rule, RuleListing, Scope, ScopeKind
from reconcile.core.notes import Lease, format_note
from reconcile.core.planner import make_plan

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
TAG = "Blocked by fail2ban"
BANS, RULES = 100_000, 50_000
SCOPE = Scope(ScopeKind.ZONE, "023e105f4ecef8ad9ca31a8372d0c353")
CASES = ("1 host", "4 hosts")
FLEET = ("web1", "web2", "web3", "web4")
OTHERS = ("web2", "web3", "web4", "web5")  # a set this host (web1) is not in: it joins


def build(case: str) -> tuple[list[Ban], list[RuleListing], Policy]:
    """100,000 bans, one a second over the last 28 hours, 7 days long; rules for the newest 50,000.

    Even rules are up to date, odd ones a lease an hour short (a renewal). With 4 hosts every rule carries
    a 4-host set; every fourth lacks this host, which joins it.
    """
    v4 = [str(ipaddress.IPv4Address("45.0.0.0") + i) for i in range(BANS * 9 // 10)]
    v6 = [str(ipaddress.IPv6Address("2a06:4880::") + i) for i in range(BANS - len(v4))]
    bans = []
    for i, ip in enumerate(v4 + v6):
        since = NOW - timedelta(seconds=i)
        bans.append(Ban(ipaddress.ip_address(ip), ("sshd",), since, since + timedelta(days=7)))
    rules = []
    for i, ban in enumerate(bans[:RULES]):
        assert ban.until is not None
        until = ban.until if i % 2 == 0 else ban.until - timedelta(hours=1)
        hosts = ("web1",) if case == "1 host" else OTHERS if i % 4 == 3 else FLEET
        notes = format_note(TAG, Lease(ban.jails, hosts, ban.since, until)) or ""
        target = "ip" if ban.ip.version == 4 else "ip6"
        rules.append(Rule(f"{i:032x}", SCOPE, target, ban.ip.compressed, "block", notes, NOW))
    policy = Policy(tag=TAG, host_id="web1", cloudflare_ranges=ranges.ALL)
    return bans, [RuleListing(SCOPE, tuple(rules))], policy


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def main(case: str, runs: int) -> None:
    bans, listings, policy = build(case)
    before = _status_kib("VmRSS")
    seconds, writes = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        plan = make_plan(bans, [], listings, policy, NOW)
        written = plan.writes()
        seconds.append(time.perf_counter() - started)
        # Freed outside the timing: a run keeps its plan to the end, and its process exits without freeing it
        # (reconcile.cli.run). Freed inside, the 100,000 changes added 0.2 s that are not planning.
        writes = len(written)
        del plan, written
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the (v)forked parent, the big pytest process
    peak = _status_kib("VmHWM")
    tracemalloc.start()  # a pass of its own: tracing slows the code down severalfold
    make_plan(bans, [], listings, policy, NOW).writes()
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    measured = {"before_kib": before, "peak_kib": peak, "traced_peak": traced}
    print(json.dumps({**measured, "writes": writes, "seconds": seconds}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
