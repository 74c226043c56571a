"""A whole run on simulated time against an in-memory HTTP layer: the seams a fleet simulation (issue 18)
drives. Nothing here sleeps, opens a socket or reads the real clock; the run's only clock is `SimClock`.

The seams, as run.execute takes them:
- pacer = open.make_pacer(config, clock=sim.monotonic, sleep=sim.sleep): the one clock of the run (the
  transport's backoff and the list backend's polls use the pacer's clock and sleep too);
- client_factory = lambda c, creds, p: open.make_client(c, creds, p, session=fake): the HTTP layer, any
  object with request(method, url, **kwargs) -> (status_code, headers, content) and close();
- read = lambda config: Fail2banState(...): fail2ban's bans; clock = sim.utcnow: the planner's `now`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from reconcile.cloudflare.credentials import Credentials
from reconcile.cloudflare.open import make_client, make_pacer
from reconcile.cloudflare.pacing import Pacer
from reconcile.cloudflare.rules import Client
from reconcile.config import Config, from_mapping
from reconcile.core.model import BanEntry, Fail2banState
from reconcile.run import Options, Outcome, execute

ZONE = "023e105f4ecef8ad9ca31a8372d0c353"
EPOCH = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class SimClock:
    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds

    def utcnow(self) -> datetime:
        return EPOCH + timedelta(seconds=self.t)


class FakeResponse:
    def __init__(self, status: int, doc: Any, headers: dict[str, str]) -> None:
        self.status_code = status
        self.content = json.dumps(doc).encode()
        self.headers = headers


class FakeCloudflare:
    """Zone IP Access Rules in memory, a fixed-window quota stated on every answer, 50 ms per request."""

    def __init__(self, sim: SimClock, q: int = 1200, w: float = 300.0) -> None:
        self.sim, self.q, self.w = sim, q, w
        self.rules: list[dict[str, Any]] = []
        self.count = 0
        self.limited = 0
        self._window = 0

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> FakeResponse:
        self.sim.t += 0.05  # the round trip, on the simulated clock
        window = int(self.sim.t // self.w)
        if self._window != window:
            self._window, self.count = window, 0
        self.count += 1
        headers = {
            "Ratelimit": f'"default";r={max(0, self.q - self.count)};t={self.w - self.sim.t % self.w:.2f}',
            "Ratelimit-Policy": f'"default";q={self.q};w={self.w:g}',
        }
        if self.count > self.q:
            self.limited += 1
            return FakeResponse(429, {"success": False, "errors": [], "result": None}, headers)
        if method == "GET":
            info = {"page": 1, "per_page": 1000, "count": len(self.rules), "total_count": len(self.rules)}
            return FakeResponse(200, {"success": True, "result": self.rules, "result_info": info}, headers)
        body = kwargs["json"]
        rule = {"id": f"{len(self.rules):032x}", "mode": body["mode"], "notes": body["notes"]}
        rule["configuration"] = body["configuration"]
        self.rules.append(rule)
        return FakeResponse(200, {"success": True, "result": rule}, headers)

    def close(self) -> None:
        pass


def config(tmp_path: Path) -> Config:
    data = {
        "cloudflare": {"zone_ids": [ZONE], "api_token_file": ""},
        "policy": {"host_id": "web1"},
        "run": {"lock_file": str(tmp_path / "lock")},
    }
    return from_mapping(data, tmp_path / "reconcile.toml")


def state(count: int) -> Fail2banState:
    start, end = EPOCH - timedelta(minutes=1), EPOCH + timedelta(hours=1)
    entries = tuple(BanEntry("sshd", f"45.155.{i // 250}.{i % 250 + 1}", start, end) for i in range(count))
    return Fail2banState(("sshd",), entries)


def simulated_run(loaded: Config, sim: SimClock, fake: FakeCloudflare) -> Outcome:
    """A run of 100 bans on `sim`'s time, its HTTP answered by `fake`."""

    def client(c: Config, creds: Credentials, pacer: Pacer) -> Client:
        return make_client(c, creds, pacer, session=fake)

    return execute(
        loaded,
        Credentials(token="t" * 40),
        Options(),
        clock=sim.utcnow,
        pacer=make_pacer(loaded, clock=sim.monotonic, sleep=sim.sleep),
        client_factory=client,
        read=lambda _: state(100),
    )


def test_a_run_on_simulated_time_against_a_fake_http_layer(tmp_path: Path) -> None:
    sim = SimClock()
    fake = FakeCloudflare(sim)
    outcome = simulated_run(config(tmp_path), sim, fake)
    assert outcome.exit_code == 0 and len(fake.rules) == 100 and fake.limited == 0
    assert outcome.quota is not None and outcome.quota.remaining == 1200 - 101
    # Simulated time passed (the burst, then the spacing at 200 a minute), and only simulated time.
    assert sim.t > 100 * 0.05 and sim.slept
    assert outcome.stats.seconds == sim.t


def test_a_simulated_neighbour_is_kept_in_reserve(tmp_path: Path) -> None:
    sim = SimClock()
    fake = FakeCloudflare(sim, q=300)
    fake.count = 250  # spent before the run, in this window
    outcome = simulated_run(config(tmp_path), sim, fake)
    assert outcome.exit_code == 4 and fake.limited == 0
    assert "quota is spent" in str(outcome.applied.stopped if outcome.applied else outcome.error)
