"""The seam between a run and where blocks live at the edge (DESIGN §8): one small interface.

A backend lists what is at the edge (as rule listings the planner reads, whatever the resource), plans
with the pure planner (adding its own business before and after: the list backend's /64 items and
capacity), applies a whole plan (as octodns providers' `_apply(plan)`), and says which zones do not
enforce what it wrote. For the operator's tools (--check, --explain) it also reads without writing: what
exists, what covers one address, and whether the zones enforce it; as plain values they render.
Two implement it: rules.RulesBackend (IP Access Rules) and lists.ListBackend (an account IP list);
tests/support/fake_backend.py is an in-memory one for unit tests. open.make_backend picks one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from reconcile.core.applied import Applied
from reconcile.core.changes import Plan, Policy
from reconcile.core.model import Ban, BanEntry, IPAddress, RuleListing, Scope


@dataclass(frozen=True)
class ScopeFound:
    """A scope's rules, read as a run reads them; `error` (and no listing) when they could not be read."""

    scope: Scope
    listing: RuleListing | None
    error: str = ""


@dataclass(frozen=True)
class ListFound:
    """The account IP list: no listing without a list of that name (or with `error`, when unreadable)."""

    account_id: str
    name: str
    capacity: int  # `[cloudflare] list_capacity`: the items the account's lists may hold together
    listing: RuleListing | None
    error: str = ""
    others: tuple[tuple[str, int], ...] = ()  # the account's other lists and their items (num_items)


Found = ScopeFound | ListFound


@dataclass(frozen=True)
class ZoneEnforcement:
    """Whether a zone's WAF custom rules make the list block: `problems` says why not, () when they do."""

    zone: str
    list_name: str
    mode: str
    problems: tuple[str, ...]
    error: str = ""  # the ruleset's read failed: the request's own error (a 403 names a permission)


class Backend(Protocol):
    """What a run needs of the edge. `requests` and `rate_limited` count for the summary line."""

    @property
    def requests(self) -> int: ...

    @property
    def rate_limited(self) -> int: ...

    def listings(self, *, read_only: bool = False) -> list[RuleListing]:
        """Everything at the edge that the plan must see (ours and foreign), one listing per scope.

        `read_only` (--report): create nothing to list it (the list backend's list, when missing)."""
        ...

    def plan(
        self,
        bans: Sequence[Ban],
        invalid: Sequence[BanEntry],
        listings: Sequence[RuleListing],
        policy: Policy,
        now: datetime,
    ) -> Plan:
        """core.planner.make_plan, with whatever the backend must do to its input and output."""
        ...

    def apply(self, plan: Plan) -> Applied:
        """Every write of `plan`; a 429 or the budget stops it (Applied.stopped), the rest is PENDING."""
        ...

    def enforcement(self) -> tuple[str, ...]:
        """One sentence per zone where what was written blocks nobody (and what to do); () when enforced."""
        ...

    # --- read-only, for --check and --explain: nothing is created, nothing written ---

    def existing(self) -> tuple[Found, ...]:
        """What holds blocks now, one value per scope or list, in order; an unreadable one says why."""
        ...

    def covering(self, ip: IPAddress) -> Iterator[RuleListing]:
        """Every rule or item that covers `ip` (foreign ones too), one listing per scope as it is read;
        a failure to read raises (ReconcileError) after the scopes already yielded."""
        ...

    def planned_as(self, ip: IPAddress) -> IPAddress:
        """The address a plan names `ip` by: itself, or the /64 an IPv6 address is planned as."""
        ...

    def enforcement_status(self) -> tuple[ZoneEnforcement, ...]:
        """Each zone's WAF check as enforcement() would make it, read only; () with nothing to enforce."""
        ...

    def close(self) -> None:
        """Release the HTTP session (the run is over)."""
        ...
