"""A fleet of hosts against a model of Cloudflare, in simulated time, in one process (issue 18).

Every host runs the product itself: `run.execute` with the real planner, the real rules backend, the real
transport and the real Pacer; only the edges are simulated. Its fail2ban is a ban set read through
execute's `read` seam; its HTTP goes to a fake `requests.Session` (make_client's `session`) answered by
`CloudflareModel`; its Pacer, transport and backoff sleep and read the clock of `SimTime`, where a sleep
lets the other hosts run. Nothing real waits, so an hour of 100 hosts costs only the CPU of their runs.

SimTime runs one participant (thread) at a time and passes the baton at every sleep to the one that wakes
first: a discrete-event scheduler over ordinary blocking code.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import json
import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from requests.structures import CaseInsensitiveDict

from reconcile import config as config_mod
from reconcile.cloudflare.credentials import Credentials
from reconcile.cloudflare.open import make_client, make_pacer
from reconcile.config import Config
from reconcile.core.model import BanEntry, Fail2banState
from reconcile.core.notes import Lease, format_note
from reconcile.run import Options, execute

EPOCH = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ZONE = "023e105f4ecef8ad9ca31a8372d0c353"
TOKEN = "fleet-simulation-token-0123456789abcdef0123"
TAG = "Blocked by fail2ban"


class SimTime:
    """Simulated seconds, shared by every participant; only one participant runs at a time."""

    def __init__(self) -> None:
        self._now = 0.0
        self._queue: list[tuple[float, int, threading.Event]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._live = 0
        self.failures: list[BaseException] = []

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        wake = threading.Event()
        with self._lock:
            heapq.heappush(self._queue, (self._now + max(0.0, seconds), next(self._seq), wake))
            self._pass_on()
        wake.wait()

    def _pass_on(self) -> None:
        # Called with the lock held by the participant that stops running: wake the earliest sleeper.
        if self._queue:
            at, _, event = heapq.heappop(self._queue)
            self._now = max(self._now, at)
            event.set()
        elif self._live == 0:
            self._done.set()

    def run(self, participants: list[Callable[[], None]]) -> None:
        """Run every participant from time 0 until all have returned."""

        def wrap(body: Callable[[], None], start: threading.Event) -> None:
            start.wait()
            try:
                body()
            except BaseException as exc:  # reported by run(); the others go on
                self.failures.append(exc)
            finally:
                with self._lock:
                    self._live -= 1
                    self._pass_on()

        threads = []
        with self._lock:
            for body in participants:
                start = threading.Event()
                heapq.heappush(self._queue, (0.0, next(self._seq), start))
                threads.append(threading.Thread(target=wrap, args=(body, start), daemon=True))
            self._live = len(participants)
        for thread in threads:
            thread.start()
        with self._lock:
            self._pass_on()
        self._done.wait()
        for thread in threads:
            thread.join()
        if self.failures:
            raise self.failures[0]


@dataclass
class Quota:
    """Cloudflare's per-user limit as the emulator (tests/support/cf_emulator.py) and Cloudflare's
    documentation state it: `limit` requests per fixed `window` ("the time next window resets"), told in
    `Ratelimit` headers. Every request counts, refused ones too; over the limit, the rest of the window
    answers 429."""

    limit: int = 1200
    window: float = 300.0
    index: int = -1
    count: int = 0

    def admit(self, now: float) -> tuple[bool, dict[str, str]]:
        index = int(now // self.window)
        if index != self.index:
            self.index, self.count = index, 0
        self.count += 1
        allowed = self.count <= self.limit
        reset = max(0, math.ceil((index + 1) * self.window - now))
        headers: dict[str, str] = {
            "Ratelimit": f'"default";r={max(0, self.limit - self.count)};t={reset}',
            "Ratelimit-Policy": f'"default";q={self.limit};w={round(self.window)}',
        }
        if not allowed:
            headers["Retry-After"] = str(max(1, reset))
        return allowed, headers


@dataclass
class Answer:
    status_code: int
    content: bytes
    headers: CaseInsensitiveDict[str]


class CloudflareModel:
    """One zone's IP Access Rules as the rules backend uses them (list, create, update, delete), the quota,
    and a fixed latency per request. Records every request's time and status and when each IP got a rule."""

    def __init__(self, sim: SimTime, latency: float = 0.05, quota: Quota | None = None) -> None:
        self.sim = sim
        self.latency = latency
        self.quota = quota or Quota()
        self.rules: dict[str, dict[str, Any]] = {}  # id -> rule, in creation order
        self.by_value: dict[str, str] = {}
        self.requests: list[tuple[float, int]] = []  # (time, status)
        self.first_rule: dict[str, float] = {}  # IP -> when a rule for it first existed
        self._ids = itertools.count(1)
        self._pages: dict[tuple[int, int], bytes] = {}  # listing pages, until the next write

    def add(self, value: str, notes: str, mode: str = "block") -> dict[str, Any]:
        rule_id = f"{next(self._ids):032x}"
        rule: dict[str, Any] = {
            "id": rule_id,
            "paused": False,
            "mode": mode,
            "configuration": {"target": "ip6" if ":" in value else "ip", "value": value},
            "notes": notes,
            "created_on": _iso(self.sim.now()),
            "modified_on": _iso(self.sim.now()),
        }
        self.rules[rule_id] = rule
        self.by_value[value] = rule_id
        self.first_rule.setdefault(value, self.sim.now())
        self._pages.clear()
        return rule

    def request(self, method: str, url: str, json_body: Any) -> Answer:
        now = self.sim.now()
        allowed, headers = self.quota.admit(now)
        if allowed:
            status, body = self._handle(method, urlsplit(url), json_body)
        else:
            status, body = 429, _envelope(None, [{"code": 10000, "message": "Rate limited"}])
        self.requests.append((now, status))
        self.sim.sleep(self.latency)
        headers["Content-Type"] = "application/json"
        return Answer(status, body, CaseInsensitiveDict(headers))

    def _handle(self, method: str, parts: Any, body: Any) -> tuple[int, bytes]:
        path = parts.path.split("/client/v4", 1)[-1]
        base = f"/zones/{ZONE}/firewall/access_rules/rules"
        if method == "GET" and path == base:
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            return 200, self._page(int(query.get("page", "1")), int(query.get("per_page", "20")))
        if method == "POST" and path == base:
            value = body["configuration"]["value"]
            if value in self.by_value:
                return 400, _envelope(None, [{"code": 10009, "message": "firewallaccessrules.api.duplicate"}])
            return 200, _envelope(self.add(value, body.get("notes", ""), body["mode"]))
        rule_id = path.rsplit("/", 1)[-1]
        if not path.startswith(base + "/") or rule_id not in self.rules:
            return 404, _envelope(None, [{"code": 10001, "message": "not found"}])
        self._pages.clear()
        if method == "PATCH":
            rule = self.rules[rule_id]
            rule.update(mode=body["mode"], notes=body["notes"], modified_on=_iso(self.sim.now()))
            return 200, _envelope(rule)
        if method == "DELETE":
            rule = self.rules.pop(rule_id)
            self.by_value.pop(rule["configuration"]["value"], None)
            return 200, _envelope({"id": rule_id})
        return 405, _envelope(None, [{"code": 10000, "message": "method not allowed"}])

    def _page(self, page: int, per_page: int) -> bytes:
        cached = self._pages.get((page, per_page))
        if cached is None:
            rules = list(self.rules.values())
            total = len(rules)
            info = {
                "page": page,
                "per_page": per_page,
                "count": len(rules[(page - 1) * per_page : page * per_page]),
                "total_count": total,
                "total_pages": max(1, -(-total // per_page)),
            }
            chunk = rules[(page - 1) * per_page : page * per_page]
            cached = self._pages[(page, per_page)] = _envelope(chunk, result_info=info)
        return cached


class FakeSession:
    """The `requests.Session` the product's transport is handed: every request goes to the model."""

    def __init__(self, model: CloudflareModel) -> None:
        self.model = model

    def request(self, method: str, url: str, *, json: Any = None, **_: Any) -> Answer:
        return self.model.request(method, url, json)

    def close(self) -> None:
        pass


def _envelope(result: Any, errors: list[dict[str, Any]] | None = None, result_info: Any = None) -> bytes:
    doc: dict[str, Any] = {"success": not errors, "errors": errors or [], "messages": [], "result": result}
    if result_info is not None:
        doc["result_info"] = result_info
    return json.dumps(doc).encode()


def _iso(seconds: float) -> str:
    return (EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def moment(seconds: float) -> datetime:
    return EPOCH + timedelta(seconds=int(seconds))


@dataclass
class Host:
    """One host: its fail2ban (bans with the simulated second they start and end), its runs' exit codes."""

    name: str
    config: Config
    bans: dict[str, tuple[float, float]]  # ip -> (start, end) in simulated seconds
    exits: list[tuple[float, int]] = field(default_factory=list)  # (when the run started, exit code)

    def state(self, now: float) -> Fail2banState:
        entries = tuple(
            BanEntry("sshd", ip, moment(start), moment(end))
            for ip, (start, end) in self.bans.items()
            if start <= now < end
        )
        return Fail2banState(("sshd",), entries)


def host_config(directory: Path, name: str) -> Config:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(
        "[cloudflare]\n"
        'api_base_url = "https://api.cloudflare.com/client/v4"\n'
        f'zone_ids = ["{ZONE}"]\n'
        f'[policy]\nhost_id = "{name}"\n'
        f'[run]\nlock_file = "{directory / name}.lock"\n'
    )
    return config_mod.load(path)


def run_host(sim: SimTime, model: CloudflareModel, host: Host, until: float, rng: random.Random) -> None:
    """The host's timer (OnCalendar every 2 minutes, RandomizedDelaySec=15 s), one run per tick; a tick
    that comes while a run goes on is skipped, as systemd does."""
    period, jitter = 120.0, 15.0
    tick = 0
    credentials = Credentials(token=TOKEN)
    while True:
        start = tick * period + rng.uniform(0, jitter)
        tick += 1
        if start >= until:
            return
        if start < sim.now():
            continue
        sim.sleep(start - sim.now())
        began = sim.now()
        pacer = make_pacer(host.config, clock=sim.now, sleep=sim.sleep)
        outcome = execute(
            host.config,
            credentials,
            Options(),
            clock=lambda: moment(sim.now()),
            pacer=pacer,
            client_factory=lambda config, creds, p: make_client(
                config,
                creds,
                p,
                session=FakeSession(model),
                sleep=sim.sleep,
                # One page at a time: SimTime runs one thread of a host, a listing's page threads would be
                # participants it does not know. Pages at once shorten a run by simulated tenths of a
                # second against its 2-minute timer; the requests and the quota are the same.
                pages_at_once=1,
            ),
            read=lambda config: host.state(sim.now()),
        )
        host.exits.append((began, outcome.exit_code))


def seed_note(hosts: tuple[str, ...], since: float, until: float) -> str:
    return format_note(TAG, Lease(("sshd",), hosts, moment(since), moment(until))) or ""


def addresses(count: int, first: str) -> list[str]:
    start = ipaddress.IPv4Address(first)
    return [str(start + i) for i in range(count)]
