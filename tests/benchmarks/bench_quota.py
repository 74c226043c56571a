"""The quota figures (issue 19, docs/benchmarks.md section 7): hosts sharing the account's API quota.

(a) two hosts with 1,000 new bans each, their runs concurrent on the 2-minute timer; (b) one host with 2,000
new bans while another client of the account spends half the quota evenly. The emulator's clock runs SCALE
times faster and the product's settings are scaled alike, so the figures are in emulated seconds (the
product's own); 429s are asserted (none), the time and the share are recorded.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconcile.cloudflare.pacing import Pacer
from tests.benchmarks import report
from tests.benchmarks.bench_figures import LIMIT, SCALE, WINDOW, scaled_emulator
from tests.support.cf_emulator import CloudflareEmulator
from tests.support.f2b_server import F2B, running_f2b
from tests.support.harness import Harness, make_harness

RPM, BUDGET, MAX_SECONDS, TIMER = 200.0, 600, 100.0, 120.0  # the product's defaults
MAX_ROUNDS = 30


def addresses(n: int, prefix: str) -> list[str]:
    return [f"{prefix}.{i // 250}.{i % 250 + 1}" for i in range(n)]


@pytest.fixture
def harness_of(tmp_path: Path) -> Iterator[Callable[[F2B, CloudflareEmulator], Harness]]:
    made: list[Iterator[Harness]] = []

    def make(f2b: F2B, cf: CloudflareEmulator) -> Harness:
        where = tmp_path / f"h{len(made)}"
        where.mkdir()
        gen = make_harness(f2b, cf, where)
        made.append(gen)
        return next(gen)

    yield make
    for gen in made:
        for _ in gen:
            pass


def on_timer(hosts: list[Harness], bans: set[str]) -> tuple[list[int], float]:
    """Runs on every host each TIMER (scaled) until every ban is at the edge: the exit codes of every run,
    and the real seconds it took."""
    codes: list[int] = []
    started = time.monotonic()
    for n in range(MAX_ROUNDS):
        time.sleep(max(0.0, started + n * TIMER / SCALE - time.monotonic()))
        round_codes = [0] * len(hosts)

        def one(i: int, h: Harness, out: list[int] = round_codes) -> None:
            out[i] = h.execute(pacer=Pacer(RPM * SCALE, BUDGET, MAX_SECONDS / SCALE)).exit_code

        threads = [threading.Thread(target=one, args=(i, h)) for i, h in enumerate(hosts)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes += round_codes
        if set(hosts[0].rules()) >= bans:
            break
    return codes, time.monotonic() - started


def _record(case: str, bans: int, cf: CloudflareEmulator, codes: list[int], real: float, done: bool) -> None:
    emulated = real * SCALE
    # The limiter's windows are fixed: what the runs could spend is the quota of every window they touched.
    available = LIMIT * math.ceil(emulated / WINDOW)
    hosts = len(cf.requests)
    report.record(
        "quota",
        **{
            "case": case,
            "bans": bans,
            "429s (hosts)": cf.rate_limited,
            "429s (neighbour)": cf.neighbour_limited,
            "requests (hosts)": hosts,
            "runs": len(codes),
            "exit 4 runs": codes.count(4),
            "emulated s until all at the edge": round(emulated) if done else "not finished",
            "share of quota: hosts": f"{hosts / available:.0%}",
            "share of quota: neighbour": f"{cf.neighbour_spent / available:.0%}",
            "target": "0 429s, every ban at the edge",
            "result": report.verdict(done and cf.rate_limited == 0 and cf.neighbour_limited == 0),
        },
    )


def test_two_hosts_share_the_quota(harness_of: Callable[[F2B, CloudflareEmulator], Harness]) -> None:
    one, two = addresses(1000, "45.201"), addresses(1000, "45.202")
    with (
        running_f2b() as f1,
        running_f2b() as f2,
        scaled_emulator() as cf,
    ):
        f1.ban("sshd", *one)
        f2.ban("sshd", *two)
        web1, web2 = harness_of(f1, cf), harness_of(f2, cf)
        web1.config(fail2ban={"jails": ["sshd"]}, policy={"host_id": "web1"})
        web2.config(fail2ban={"jails": ["sshd"]}, policy={"host_id": "web2"})
        codes, real = on_timer([web1, web2], {*one, *two})
        done = set(web1.rules()) >= {*one, *two}
        _record("(a) two hosts", 2000, cf, codes, real, done)
    report.sample_load("quota, two hosts")
    assert cf.rate_limited == 0 and done


def test_a_neighbour_at_half_the_quota(harness_of: Callable[[F2B, CloudflareEmulator], Harness]) -> None:
    bans = addresses(2000, "45.203")
    with (
        running_f2b() as f2b,
        scaled_emulator() as cf,
    ):
        f2b.ban("sshd", *bans)
        h = harness_of(f2b, cf)
        h.config(fail2ban={"jails": ["sshd"]})
        stop = threading.Event()
        pace = (WINDOW / SCALE) / (LIMIT / 2)

        def neighbour() -> None:
            while not stop.wait(pace):
                cf.spend(1)

        thread = threading.Thread(target=neighbour, daemon=True)
        thread.start()
        try:
            codes, real = on_timer([h], set(bans))
        finally:
            stop.set()
            thread.join()
        done = set(h.rules()) >= set(bans)
        _record("(b) a neighbour at 50 %", 2000, cf, codes, real, done)
    report.sample_load("quota, a neighbour at 50 %")
    assert cf.rate_limited == 0 and cf.neighbour_limited == 0 and done
