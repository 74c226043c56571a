"""An in-memory backend.Backend: items by IP value, no HTTP, for fast tests of apply's results, exit codes
and the renderers. `fail` makes writes of those values fail; `rate_limit_after` answers 429 after that many
writes; `unenforced` is what enforcement() reports, `zones` what enforcement_status() does. The read-only
methods (existing, covering, enforcement_status) never change `rules`; each read counts as a request."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from reconcile.cloudflare.backend import Found, ScopeFound, ZoneEnforcement
from reconcile.core.applied import Applied, Result, Written
from reconcile.core.changes import Action, Plan, Policy
from reconcile.core.model import Ban, BanEntry, IPAddress, Rule, RuleListing, Scope, ScopeKind
from reconcile.core.planner import make_plan
from reconcile.errors import CloudflareError, RateLimited

SCOPE = Scope(ScopeKind.ZONE, "f" * 32)


@dataclass
class FakeBackend:
    rules: dict[str, Rule] = field(default_factory=dict)  # by value
    fail: frozenset[str] = frozenset()
    rate_limit_after: int | None = None
    unenforced: tuple[str, ...] = ()
    zones: tuple[ZoneEnforcement, ...] = ()
    requests: int = 0
    rate_limited: int = 0
    mode: str = "block"
    read_only: list[bool] = field(default_factory=list)  # each listings() call's read_only

    def listings(self, *, read_only: bool = False) -> list[RuleListing]:
        self.read_only.append(read_only)
        self.requests += 1
        return [RuleListing(SCOPE, tuple(self.rules.values()))]

    def plan(
        self,
        bans: Sequence[Ban],
        invalid: Sequence[BanEntry],
        listings: Sequence[RuleListing],
        policy: Policy,
        now: datetime,
    ) -> Plan:
        return make_plan(bans, invalid, listings, policy, now)

    def apply(self, plan: Plan) -> Applied:
        outcomes: list[Written] = []
        writes = plan.writes()
        for index, change in enumerate(writes):
            if self.rate_limit_after is not None and self.requests >= self.rate_limit_after:
                self.rate_limited += 1
                stopped = RateLimited(method="POST", path="/fake", retry_after=None)
                outcomes += [Written(c, Result.PENDING) for c in writes[index:]]
                return Applied(tuple(outcomes), stopped)
            self.requests += 1
            if change.value in self.fail:
                error = CloudflareError("refused", method="POST", path="/fake", status=400)
                outcomes.append(Written(change, Result.FAILED, str(error)))
                continue
            if change.action is Action.EXPIRE:
                self.rules.pop(change.value, None)
            else:
                target = "ip6" if ":" in change.value else "ip"
                rule_id = f"{len(self.rules) + 1:032x}"
                self.rules[change.value] = Rule(rule_id, SCOPE, target, change.value, self.mode, change.notes)
            outcomes.append(Written(change, Result.DONE))
        return Applied(tuple(outcomes))

    def enforcement(self) -> tuple[str, ...]:
        return self.unenforced

    def existing(self) -> tuple[Found, ...]:
        self.requests += 1
        return (ScopeFound(SCOPE, RuleListing(SCOPE, tuple(self.rules.values()))),)

    def covering(self, ip: IPAddress) -> Iterator[RuleListing]:
        self.requests += 1
        yield RuleListing(SCOPE, tuple(r for r in self.rules.values() if r.value == ip.compressed))

    def planned_as(self, ip: IPAddress) -> IPAddress:
        return ip

    def enforcement_status(self) -> tuple[ZoneEnforcement, ...]:
        return self.zones

    def close(self) -> None:
        pass
