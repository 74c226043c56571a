"""The per-ban way of the old curl scripts, for comparison: one independent create per ban.

fail2ban ran the script's actionban once per ban; each call POSTed one rule, with no pacing, no retry and
no memory of earlier calls. A burst of bans is then a burst of independent POSTs from fail2ban's action
workers (16 here); an answer other than success (a 429 above all) is a ban that never reaches the edge.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from threading import local

import requests

WORKERS = 16


@dataclass(frozen=True)
class Burst:
    bans: int
    created: int
    rate_limited: int  # answered 429
    failed: int  # any other failure
    seconds: float  # first request to last answer

    @property
    def lost(self) -> int:
        return self.bans - self.created


def ban_one_by_one(base_url: str, zone_id: str, token: str, ips: Sequence[str]) -> Burst:
    """POST one rule per IP from WORKERS threads at once, as the scripts' actionban did."""
    sessions = local()  # one connection per worker, as each curl process had its own
    opened: list[requests.Session] = []

    def create(ip: str) -> int:
        session = getattr(sessions, "session", None)
        if session is None:
            session = sessions.session = requests.Session()
            opened.append(session)
        body = {
            "mode": "block",
            "configuration": {"target": "ip6" if ":" in ip else "ip", "value": ip},
            "notes": "Fail2Ban sshd",
        }
        try:
            answer = session.post(
                f"{base_url}/zones/{zone_id}/firewall/access_rules/rules",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
        except requests.RequestException:
            return 0
        return answer.status_code

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        statuses = list(pool.map(create, ips))
    seconds = time.monotonic() - started
    for session in opened:
        session.close()
    created = sum(1 for s in statuses if s == 200)
    limited = sum(1 for s in statuses if s == 429)
    return Burst(len(ips), created, limited, len(ips) - created - limited, seconds)
