"""The fleet simulation (figure 9) in the background of the whole `make bench`.

The simulation costs only CPU (about 15 CPU-minutes for the five sizes), and it cannot be split: one size is
one simulated account, run one host at a time. The other benchmarks leave most of the machine's two cores
idle while they wait on the emulator's latency, the pacing and fail2ban, so the sizes start in two child
processes when the session starts, at idle priority (SCHED_IDLE: they get a core only when nothing else
wants it), and test_fleet, the session's last test, collects them. Their figures are in simulated time, so
the priority changes when they finish, never what they measure.

Idle priority is not no cost: next to them the `--report` figure measured 5-15 % slower (its target, 1.2 x
the bare reads + 1 s, has a constant part that does not scale with that). So it, and the other CPU-bound
figures with targets in absolute time (the planner, start-up), are measured with them stopped (`paused`,
40 s in all). A single-threaded loop measured no slower beside them (0.88 s against 0.95 s paused): the
planner's spread between sessions (0.87-1.43 s, same code) is the shared machine's, not theirs. The rest of
the session, ban to edge included (mostly waits), lends them its idle core: stopped for longer, they would
finish after the last test.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from tests.support.fleet_scenario import Figures, Scenario, simulate

SIZES = tuple(int(n) for n in os.environ.get("FLEET_HOSTS", "1,10,20,50,100").split(","))

_running: dict[int, Future[Figures]] = {}
_pool: ProcessPoolExecutor | None = None


def _idle_priority() -> None:
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or refused: the lowest nice value does nearly as well
        os.nice(19)


def _one(hosts: int) -> Figures:
    with tempfile.TemporaryDirectory(prefix="fleet-") as tmp:
        return simulate(Scenario(hosts=hosts), Path(tmp))


def start() -> None:
    """Start every size, the largest first (it alone takes the longest); at most once per session."""
    global _pool
    if _pool is not None:
        return
    _pool = ProcessPoolExecutor(max_workers=2, initializer=_idle_priority)
    for hosts in sorted(SIZES, reverse=True):
        _running[hosts] = _pool.submit(_one, hosts)


def results() -> dict[int, Figures]:
    """Every size's figures, waiting for those still running."""
    start()
    assert _pool is not None
    try:
        return {hosts: _running[hosts].result() for hosts in sorted(SIZES)}
    finally:
        _pool.shutdown(cancel_futures=True)


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The fleet's processes stopped (SIGSTOP) meanwhile, then continued; nothing when none is running."""
    children = multiprocessing.active_children() if _pool is not None else []
    stopped: list[int] = []
    try:
        for pid in [child.pid for child in children if child.pid is not None]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        yield
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
