"""The account IP list backend (DESIGN §9): a thousand items per request, enforced by one WAF rule per zone.

Items are `{ip, comment}`; the comment carries the same notes as a rule (§4), so the planner reads an item
as a rule (target `ip` for an IPv4 address, `ip6` for a /64, `ip_range` for any other CIDR) and plans as
for rules. What is this backend's own business runs as pure helpers around the planner (list_plan.py):
- before planning, IPv6 bans become their /64 (`group_bans`): one item for every banned address in it;
- after planning, the /64 items are named so (`label_networks`: `2a06:4880:1:2::/64`), a ban a foreign wider
  CIDR already covers is foreign (`foreign_cover`), and the plan is fitted into the room (`fit_capacity`).
Writes are bulk upserts (`POST …/items`) and bulk deletes by id, one operation at a time, each polled to its
end before the next is sent. Never `PUT`: it would replace the operator's items.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import quote

from reconcile.cloudflare import paging, waf
from reconcile.cloudflare.answers import show, whole
from reconcile.cloudflare.backend import Found, ListFound, ZoneEnforcement
from reconcile.cloudflare.list_plan import (
    fit_capacity,
    foreign_cover,
    group_bans,
    item_covers,
    item_ip,
    item_network,
    item_rule,
    label_networks,
    spare_allowlisted,
)
from reconcile.cloudflare.retire import retire
from reconcile.cloudflare.rule_writes import apply
from reconcile.cloudflare.rules import Client, readable_scopes
from reconcile.cloudflare.transport import ApiError
from reconcile.config import Config
from reconcile.core.applied import Applied, Result, Written
from reconcile.core.changes import Action, Change, Plan, Policy
from reconcile.core.model import Ban, BanEntry, IPAddress, Rule, RuleListing, Scope, ScopeKind
from reconcile.core.planner import make_plan
from reconcile.errors import BudgetExhausted, CloudflareError, RateLimited, ReconcileError

log = logging.getLogger("reconcile.cloudflare")


PER_PAGE = 500  # the most the items listing takes
BATCH = 1000  # items per bulk write
POLL_FIRST = 1.0  # seconds before the first poll of an operation, doubling up to POLL_MAX
POLL_MAX = 8.0
OPERATION_LIMIT = 60.0  # seconds an operation may take before the run stops waiting for it


# --- the backend ---------------------------------------------------------------------------------------


class ListBackend:
    """backend.Backend for an account IP list, over the run's client (its transport: pacing, retries, 429).

    Switching from the rules backend: once every zone of `zone_ids` enforces the list (its WAF rule was
    there when the run started), this host's IP Access Rules in those zones are planned as if it banned
    nothing there: a rule of its own goes, a shared one is left (the other hosts keep theirs). Those
    changes pass the same safety guard and report as any expiry; they are sent after the list is written.
    """

    def __init__(
        self,
        transport: Client,
        config: Config,
        *,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.transport = transport
        self.config = config
        # The run's pacer's clock and sleep by default: one injected clock drives the whole run.
        self._sleep = sleep if sleep is not None else transport.pacer.sleep
        self._clock = clock if clock is not None else transport.pacer.clock
        self._lists_path = f"/accounts/{quote(config.cloudflare.account_id, safe='')}/rules/lists"
        self.list_id = ""
        self._listed = 0
        self._rules: tuple[Rule, ...] = ()
        self._expiries_first = False
        self._unenforced: tuple[str, ...] | None = None  # read in listings(), None: not read
        # The account's other lists and their items (`num_items` of the list index): they share its room.
        self.other_lists: tuple[tuple[str, int], ...] = ()

    @property
    def requests(self) -> int:
        return self.transport.requests

    @property
    def rate_limited(self) -> int:
        return self.transport.rate_limited

    @property
    def scope(self) -> Scope:
        return Scope(ScopeKind.LIST, self.list_id)

    def close(self) -> None:
        self.transport.close()

    # --- reading ---

    def listings(self, *, read_only: bool = False) -> list[RuleListing]:
        # --report creates nothing (DESIGN §7): without the list, it plans against an empty one.
        self.list_id = self._find(self.config.cloudflare.list_name) if read_only else self._find_or_create()
        if self.config.cloudflare.waf_rule == "off":
            return [self._listing()]
        # The zones do not depend on the items: read meanwhile, as the cursor's pages can only go one after
        # another (0.1 s of a kicked run's ban to edge). Not waited for on Ctrl-C. A 429 on either thread
        # ends the run (DESIGN §6, §9), the WAF check's too (it reads one as "not readable"), at any timing.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zones")
        try:
            zones = pool.submit(self._zone_listings)
            found = [self._listing(), *zones.result()]
        except ReconcileError as exc:
            # Their outcome too, as for a listing's pages (paging.in_order): a 429 there decides.
            wait([zones], timeout=paging.STOPPED_WAIT)
            self.transport.raise_if_limited(instead_of=exc)
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        self.transport.raise_if_limited()
        return found

    def _listing(self) -> RuleListing:
        rules, complete = self._items() if self.list_id else ([], True)
        self._rules, self._listed = tuple(rules), len(rules)
        return RuleListing(self.scope, self._rules, complete)

    def _zone_listings(self) -> list[RuleListing]:
        """Whether each zone enforces the list; when all do, their IP Access Rules (this host's then go)."""
        self._unenforced = self._enforce("check")
        if self._unenforced:
            return []
        zones = [Scope(ScopeKind.ZONE, z) for z in self.config.cloudflare.zone_ids]
        return readable_scopes(self.transport, zones, "retiring this host's old IP Access Rules")

    def existing(self) -> tuple[Found, ...]:
        config = self.config
        try:
            listing, error = self._existing(), ""
        except ReconcileError as exc:
            listing, error = None, str(exc)
        return (
            ListFound(
                config.cloudflare.account_id,
                config.cloudflare.list_name,
                config.cloudflare.list_capacity,
                listing,
                error,
                self.other_lists,
            ),
        )

    def covering(self, ip: IPAddress) -> Iterator[RuleListing]:
        found = self._existing()
        if found is not None:
            # The list is read whole (its API has no value filter); only what covers `ip` is kept.
            yield replace(found, rules=tuple(r for r in found.rules if item_covers(r, ip)))

    def planned_as(self, ip: IPAddress) -> IPAddress:
        return item_network(ip).network_address  # an IPv6 address is planned as its /64

    def _enforce(self, how: str) -> tuple[str, ...]:
        cloudflare = self.config.cloudflare
        return waf.enforce(self.transport, cloudflare.zone_ids, cloudflare.list_name, cloudflare.mode, how)

    def enforcement_status(self) -> tuple[ZoneEnforcement, ...]:
        config = self.config
        if config.cloudflare.waf_rule == "off":
            return ()
        name, mode = config.cloudflare.list_name, config.cloudflare.mode
        found = []
        for zone in config.cloudflare.zone_ids:
            problem, error = waf.zone_status(self.transport, zone, name, mode, "check")
            found.append(ZoneEnforcement(zone, name, mode, (problem,) if problem else (), error))
        return tuple(found)

    def _existing(self) -> RuleListing | None:
        """The list's items as listings() reads them, or None without the list; creates nothing."""
        self.list_id = self._find(self.config.cloudflare.list_name)
        return self._listing() if self.list_id else None

    def _find_or_create(self) -> str:
        name = self.config.cloudflare.list_name
        found = self._find(name)
        if found:
            return found
        body = {"name": name, "kind": "ip", "description": "fail2ban's bans, kept by reconcile"}
        try:
            result = self.transport.call("POST", self._lists_path, body=body)
        except ApiError:
            # A create whose answer was lost, or another host's create meanwhile: the list is there now.
            found = self._find(name)
            if found:
                return found
            raise
        if not isinstance(result, dict) or not isinstance(result.get("id"), str):
            raise CloudflareError("the created list has no id", method="POST", path=self._lists_path)
        log.info("created the IP list %s (%s)", name, result["id"])
        return str(result["id"])

    def _find(self, name: str) -> str:
        result = self.transport.call("GET", self._lists_path)
        if not isinstance(result, list):
            raise CloudflareError("result is not a list of lists", method="GET", path=self._lists_path)
        self.other_lists = tuple(
            (str(entry.get("name")), max(0, whole(entry.get("num_items")) or 0))
            for entry in result
            if isinstance(entry, dict) and entry.get("name") != name
        )
        for entry in result:
            if isinstance(entry, dict) and entry.get("name") == name:
                if entry.get("kind") != "ip":
                    raise CloudflareError(
                        f"the list {name!r} is of kind {entry.get('kind')!r}, not ip: choose another "
                        "[cloudflare] list_name",
                        method="GET",
                        path=self._lists_path,
                    )
                if not isinstance(entry.get("id"), str):
                    raise CloudflareError(f"list {name!r} has no id", method="GET", path=self._lists_path)
                return str(entry["id"])
        return ""

    def _items(self) -> tuple[list[Rule], bool]:
        """Every item, by the cursor; an unreadable page after the first leaves the listing incomplete."""
        path = f"{self._lists_path}/{quote(self.list_id, safe='')}/items"
        rules: list[Rule] = []
        cursors: set[str] = set()
        cursor = ""
        while True:
            query = {"per_page": str(PER_PAGE), **({"cursor": cursor} if cursor else {})}
            shown = show(path, query)
            try:
                document = self.transport.envelope("GET", shown, self.transport.send("GET", shown, None))
                result = document["result"]
                if not isinstance(result, list):
                    raise CloudflareError("result is not a list of items", method="GET", path=shown)
                rules += [item_rule(item, self.scope, self.config.cloudflare.mode, shown) for item in result]
            except (RateLimited, BudgetExhausted):
                raise
            except CloudflareError as exc:
                if not rules and not cursor:
                    raise
                log.error("listing of list %s incomplete after %d items: %s", self.list_id, len(rules), exc)
                return rules, False
            info = document.get("result_info")
            after = info.get("cursors", {}).get("after") if isinstance(info, dict) else None
            if not isinstance(after, str) or not after or not result:
                return rules, True
            if after in cursors:  # a server handing out the same cursor again would never end
                log.error("listing of list %s: cursor repeats after %d items", self.list_id, len(rules))
                return rules, False
            cursors.add(after)
            cursor = after

    # --- planning ---

    def plan(
        self,
        bans: Sequence[Ban],
        invalid: Sequence[BanEntry],
        listings: Sequence[RuleListing],
        policy: Policy,
        now: datetime,
    ) -> Plan:
        grouped, groups = group_bans(bans, policy.allowlist)
        ours = [listing for listing in listings if listing.scope.kind == ScopeKind.LIST]
        # The older scripts never wrote list items: only an item whose comment carries the tag is managed.
        items = replace(policy, tagged_only=True)
        plan = make_plan(grouped, invalid, ours, items, now)
        plan = foreign_cover(label_networks(plan, groups), self._rules, items)
        plan = spare_allowlisted(plan, policy.allowlist)
        fitted = fit_capacity(
            plan, self._listed, self.room(), policy.host_id, self.config.policy.max_expire_fraction
        )
        self._expiries_first = fitted.expiries_first
        retiring = [listing for listing in listings if listing.scope.kind != ScopeKind.LIST]
        if not retiring:
            return fitted.plan
        retired = retire(fitted.plan, bans, retiring, policy, now, self.config.policy.max_expire_fraction)
        return Plan(
            fitted.plan.changes + retired.changes,
            {**fitted.plan.managed, **retired.managed},
            fitted.plan.incomplete + retired.incomplete,
        )

    def room(self) -> int:
        """The items this list may hold: `list_capacity` (the account's limit across its lists) less the
        items of the account's other lists (DESIGN §9)."""
        others = sum(count for _, count in self.other_lists)
        return max(0, self.config.cloudflare.list_capacity - others)

    # --- writing ---

    def apply(self, plan: Plan) -> Applied:
        mine = Plan(tuple(c for c in plan.changes if c.scope == self.scope))
        applied = self._apply_list(mine)
        rules = Plan(tuple(c for c in plan.changes if c.scope is not None and c.scope.kind == ScopeKind.ZONE))
        if not rules.writes():
            return applied
        if applied.stopped is not None or applied.count(Result.FAILED):
            # The rules go only once the list holds what they blocked.
            left = tuple(Written(c, Result.PENDING) for c in rules.writes())
            return Applied(applied.outcomes + left, applied.stopped)
        retired = apply(rules, self.transport, self.config.cloudflare.mode)
        return Applied(applied.outcomes + retired.outcomes, retired.stopped)

    def _apply_list(self, plan: Plan) -> Applied:
        writes = plan.writes()

        def bulk(method: str, action: Action) -> list[tuple[str, list[Change]]]:
            changes = [c for c in writes if c.action is action]
            return [(method, changes[i : i + BATCH]) for i in range(0, len(changes), BATCH)]

        # Renewals and leaves add no item: their own operations, before any add, so an add that does not
        # fit the account's room (another tool's list grew) never holds one back (DESIGN §9).
        renewals, adds, removals = (
            bulk("POST", Action.RENEW),
            bulk("POST", Action.ADD),
            bulk("DELETE", Action.EXPIRE),
        )
        # Adds before expiries (the edge gets stricter first), unless the adds need the room they free.
        batches = renewals + (removals + adds if self._expiries_first else adds + removals)
        outcomes: list[Written] = []
        for index, (method, changes) in enumerate(batches):
            try:
                result, detail = self._write(method, changes)
            except (RateLimited, BudgetExhausted) as exc:
                left = [c for _, rest in batches[index:] for c in rest]
                outcomes += [Written(c, Result.PENDING) for c in left]
                log.warning("stopping early: %s; %d change(s) left for the next run", exc, len(left))
                return Applied(tuple(outcomes), exc)
            except CloudflareError as exc:
                result, detail = Result.FAILED, str(exc)
            if result is Result.FAILED:
                log.error("%s of %d items failed: %s", method, len(changes), detail)
            else:
                log.info("%s %d items to list %s: %s", method, len(changes), self.list_id, result)
            outcomes += [Written(c, result, detail) for c in changes]
        return Applied(tuple(outcomes))

    def _write(self, method: str, changes: Sequence[Change]) -> tuple[Result, str]:
        path = f"{self._lists_path}/{quote(self.list_id, safe='')}/items"
        body: Any
        if method == "DELETE":
            body = {"items": [{"id": c.rule.id} for c in changes if c.rule is not None]}
        else:
            body = [{"ip": item_ip(c), "comment": c.notes} for c in changes]
        result = self.transport.call(method, path, body=body)
        operation = result.get("operation_id") if isinstance(result, dict) else None
        if not isinstance(operation, str) or not operation:
            raise CloudflareError("answer has no operation_id", method=method, path=path)
        return self._wait(operation)

    def _wait(self, operation: str) -> tuple[Result, str]:
        """Poll the operation until it ends: from 1 s doubling, for at most 60 s, within the run's limit."""
        path = f"{self._lists_path}/bulk_operations/{quote(operation, safe='')}"
        started, delay = self._clock(), POLL_FIRST
        while True:
            left = min(OPERATION_LIMIT - (self._clock() - started), self.transport.pacer.remaining())
            if delay > left:
                # The next write would get 429 while it runs: stop, the next run sees what it did.
                raise BudgetExhausted(
                    f"bulk operation {operation} still not done after {self._clock() - started:.0f} s"
                )
            self._sleep(delay)
            result = self.transport.call("GET", path)
            status = result.get("status") if isinstance(result, dict) else None
            if status == "completed":
                return Result.DONE, ""
            if status == "failed":
                error = result.get("error") if isinstance(result, dict) else None
                text = self.transport.redact(str(error or "no error given"))[:300]
                return Result.FAILED, f"GET {path}: bulk operation failed: {text}"
            if status not in ("pending", "running"):
                raise CloudflareError(f"unknown operation status {status!r}", method="GET", path=path)
            delay = min(delay * 2, POLL_MAX)

    def enforcement(self) -> tuple[str, ...]:
        waf_rule = self.config.cloudflare.waf_rule
        if waf_rule == "off" or self._unenforced == ():
            return ()  # not asked, or every zone enforced the list when the run began
        if waf_rule == "check" and self._unenforced is not None:
            return self._unenforced
        try:
            return self._enforce(waf_rule)
        except ReconcileError as exc:  # a 429 or the budget: the rule is unknown, so not known to block
            return (f"WAF rule not checked: {exc}",)
