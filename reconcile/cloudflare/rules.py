"""The IP Access Rules backend (DESIGN §3): zone- or account-level rules, one request per change.

Paging that never ends early (DESIGN §6), create / patch / delete, the operator tools' lookups
(find_rules), and `RulesBackend`, the run's seam (backend.Backend) for this resource.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from urllib.parse import quote

from reconcile.cloudflare import paging, permissions
from reconcile.cloudflare.answers import show, timestamp, whole
from reconcile.cloudflare.backend import Found, ScopeFound, ZoneEnforcement
from reconcile.cloudflare.credentials import Credentials
from reconcile.cloudflare.pacing import Pacer
from reconcile.cloudflare.rule_writes import Created, apply
from reconcile.cloudflare.transport import ApiError, Session, Transport
from reconcile.core.applied import Applied
from reconcile.core.changes import Plan, Policy
from reconcile.core.model import Ban, BanEntry, IPAddress, Rule, RuleListing, Scope
from reconcile.core.planner import make_plan
from reconcile.errors import CloudflareError, RateLimited, ReconcileError

log = logging.getLogger("reconcile.cloudflare")

CODE_DUPLICATE = 10009  # "firewallaccessrules.api.duplicate_of_existing"


class IncompleteListing(CloudflareError):
    """A page of a listing could not be read: `.rules` holds what was read before it, `.cause` why not."""

    def __init__(self, scope: Scope, rules: tuple[Rule, ...], cause: CloudflareError) -> None:
        self.scope = scope
        self.rules = rules
        self.cause = cause
        self.method, self.path, self.status, self.codes = cause.method, cause.path, cause.status, cause.codes
        # Not CloudflareError.__init__: the cause's message already names the request.
        Exception.__init__(self, f"listing of {scope} incomplete after {len(rules)} rules: {cause}")


class Client(Transport):
    """The IP Access Rules resource over the shared transport (pacing, retries, 429: transport.py)."""

    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        pacer: Pacer,
        timeout: float = 30.0,
        retries: int = 3,
        sleep: Callable[[float], None] | None = None,
        per_page: int = 1000,
        pages_at_once: int = paging.PAGES_AT_ONCE,
        session: Session | None = None,
    ) -> None:
        if not (per_page == 1 or (per_page % 5 == 0 and 5 <= per_page <= 1000)):
            raise ValueError(f"per_page must be 1 or a multiple of 5 up to 1000, not {per_page!r}")
        options = {} if sleep is None else {"sleep": sleep}
        super().__init__(
            base_url, credentials, pacer=pacer, timeout=timeout, retries=retries, session=session, **options
        )
        self.per_page = per_page
        self.pages_at_once = pages_at_once  # 1 for a simulation whose clock runs one thread at a time

    def list_rules(self, scope: Scope, notes_filter: str = "") -> list[Rule]:
        """Every rule of `scope` whose notes contain `notes_filter` (case-insensitive, server-side; "" = all).

        Pages as DESIGN §6 "Listing never ends early" says. Any failure raises IncompleteListing with the
        rules read so far, except RateLimited and BudgetExhausted, which stop the whole run and so
        propagate unchanged.
        """
        # An empty filter means no filter: the schema does not allow an empty query value.
        return self._list(scope, {"notes": notes_filter} if notes_filter else {})

    def find_rules(self, scope: Scope, value: str) -> list[Rule]:
        """Every rule of `scope` that covers `value`, whatever its notes or mode (for --explain).

        Uses the `configuration.value` filter. For an IP address that is the rule for the address itself
        plus the `ip_range` rules that contain it, one listing per range size Cloudflare allows (IPv4 /16
        and /24, IPv6 /32, /48 and /64). ASN and country rules are not looked up. Errors as list_rules.
        """
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            return self._list(scope, {"configuration.value": value})
        prefixes = (24, 16) if ip.version == 4 else (64, 48, 32)
        candidates = [ip.compressed] + [
            str(ipaddress.ip_network(f"{ip}/{n}", strict=False)) for n in prefixes
        ]
        found: dict[str, Rule] = {}
        for candidate in candidates:
            for rule in self._list(scope, {"configuration.value": candidate}):
                # The server's matching is not documented: keep only what really covers the address.
                if _covers(rule, ip):
                    found.setdefault(rule.id, rule)
        return list(found.values())

    def create_rule(self, scope: Scope, target: str, value: str, mode: str, notes: str) -> Created:
        """POST a rule. A 10009 (Cloudflare already has one for that value) is a Created without a rule."""
        body = {"mode": mode, "configuration": {"target": target, "value": value}, "notes": notes}
        path = scope.rules_path
        answer = self.send("POST", path, body)
        try:
            result = self.envelope("POST", path, answer)["result"]
        except ApiError as exc:
            if exc.status == 400 and CODE_DUPLICATE in exc.codes:
                if answer.after_lost:
                    log.info("%s %s in %s: stored by an attempt whose answer was lost", target, value, scope)
                    return Created(None, stored_earlier=True)
                log.debug("%s %s already has a rule in %s (duplicate)", target, value, scope)
                return Created(None)
            raise
        return Created(_parse_rule(result, scope, "POST", path))

    def update_rule(self, scope: Scope, rule_id: str, mode: str, notes: str) -> Rule | None:
        """PATCH a rule's mode and notes; None when the rule is gone (404): deleted since it was listed."""
        path = _rule_path(scope, rule_id)
        try:
            result = self.call("PATCH", path, body={"mode": mode, "notes": notes})
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return _parse_rule(result, scope, "PATCH", path)

    def delete_rule(self, scope: Scope, rule_id: str) -> bool:
        """DELETE a rule; False when it is already gone (404), which counts as done."""
        path = _rule_path(scope, rule_id)
        try:
            # The schema requires a JSON body on DELETE; {} means cascade "none".
            self.call("DELETE", path, body={})
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def _list(self, scope: Scope, filters: Mapping[str, str]) -> list[Rule]:
        """All pages of one filtered listing (DESIGN §6 "Listing never ends early")."""
        rules: list[Rule] = []
        stop = threading.Event()
        pages = paging.in_order(
            lambda number: self._page(scope, filters, number, stop), self._pages_at_once, stop
        )
        try:
            cause = _read(pages, rules)
        except RateLimited:
            self.raise_if_limited()  # the page that met it, not one refused after it
            raise
        except CloudflareError as exc:
            cause = exc
        finally:
            pages.close()  # the pages still in flight are answered first
        # One of them (beyond the end, or beside a page that failed) may have met a 429: the run ends here,
        # even when nothing is left to write.
        self.raise_if_limited(instead_of=cause)
        if cause is None:
            return rules
        raise IncompleteListing(scope, tuple(rules), cause) from cause

    def _pages_at_once(self) -> int:
        return self.pages_at_once if self.pacer.plentiful_now() else 1

    def _page(
        self, scope: Scope, filters: Mapping[str, str], number: int, stop: threading.Event
    ) -> paging.Page[Rule]:
        query = {**filters, "page": str(number), "per_page": str(self.per_page)}
        shown = show(scope.rules_path, query)
        document = self.envelope("GET", shown, self.send("GET", shown, None, stop=stop))
        result = document["result"]
        if not isinstance(result, list):
            raise CloudflareError(
                f"result is {type(result).__name__}, not a list of rules", method="GET", path=shown
            )
        batch = [_parse_rule(item, scope, "GET", shown) for item in result]
        size, pages = _paging(document.get("result_info"), self.per_page)
        return paging.Page(number, shown, batch, size, pages)


def _read(pages: Iterator[paging.Page[Rule]], rules: list[Rule]) -> CloudflareError | None:
    """Read pages into `rules` until the listing's end (None), or a page that brings nothing new (why not)."""
    seen: set[str] = set()
    for page in pages:
        # Offset pages shift while other hosts write; keep the first copy of a rule seen twice.
        new = [rule for rule in page.items if rule.id not in seen]
        seen.update(rule.id for rule in new)
        rules.extend(new)
        # The page size is the one the server says it used: a server that clamps 1000 to 50 still has more
        # pages after a page of 50.
        if (
            not page.items
            or len(page.items) < page.size
            or (page.pages is not None and page.number >= page.pages)
        ):
            return None
        if not new:
            # Asking on would only spend the run's budget on the same page again.
            return CloudflareError(
                f"page {page.number} is full but brings no rule not seen before (server ignores `page`?)",
                method="GET",
                path=page.shown,
                status=200,
            )
    raise AssertionError("in_order never ends")


def _rule_path(scope: Scope, rule_id: str) -> str:
    # Quoted so that an odd id can never address another path.
    return f"{scope.rules_path}/{quote(rule_id, safe='')}"


def _paging(info: object, asked: int) -> tuple[int, int | None]:
    """From result_info: the page size the server used (never more than asked) and its page count."""
    size, pages = asked, None
    if isinstance(info, dict):
        reported = whole(info.get("per_page"))
        if reported is not None and reported > 0:
            size = min(asked, reported)
        total = whole(info.get("total_pages"))
        if total is not None and total > 0:  # 0 with rules on the page would be nonsense: not trusted
            pages = total
    return size, pages


def _covers(rule: Rule, ip: IPAddress) -> bool:
    try:
        if rule.target in ("ip", "ip6"):
            return ipaddress.ip_address(rule.value) == ip
        if rule.target == "ip_range":
            net = ipaddress.ip_network(rule.value, strict=False)
            return net.version == ip.version and ip in net
    except ValueError:
        pass
    return False


def _parse_rule(item: object, scope: Scope, method: str, shown: str) -> Rule:
    """One rule object of the API as a model.Rule; CloudflareError if it does not look like one."""

    def bad(what: str) -> CloudflareError:
        return CloudflareError(f"unexpected rule in answer: {what}", method=method, path=shown)

    if not isinstance(item, dict):
        raise bad(f"{type(item).__name__}, not an object")
    rule_id, mode, config = item.get("id"), item.get("mode"), item.get("configuration")
    if not isinstance(rule_id, str) or not rule_id:
        raise bad("no id")
    if not isinstance(mode, str):
        raise bad(f"rule {rule_id} has no mode")
    if not isinstance(config, dict):
        raise bad(f"rule {rule_id} has no configuration")
    target, value = config.get("target"), config.get("value")
    if not isinstance(target, str) or not isinstance(value, str):
        raise bad(f"rule {rule_id} has no configuration target/value")
    notes = item.get("notes")
    if notes is not None and not isinstance(notes, str):
        raise bad(f"rule {rule_id} has notes of type {type(notes).__name__}")
    return Rule(
        id=rule_id,
        scope=scope,
        target=target,
        value=value,
        mode=mode,
        notes=notes or "",
        created_on=timestamp(item.get("created_on"), rule_id, "created_on", bad),
        modified_on=timestamp(item.get("modified_on"), rule_id, "modified_on", bad),
    )


def list_scope(client: Client, scope: Scope) -> RuleListing:
    """Every rule of a scope; an unreadable page marks the listing incomplete (no expiries).

    Not filtered on notes: an operator's untagged rule for a banned address must be seen, or every run
    would find it only by a create that answers 10009 (DESIGN §3). The planner tells ours from theirs.
    """
    try:
        return RuleListing(scope, tuple(client.list_rules(scope)))
    except IncompleteListing as exc:
        if not exc.rules:
            # Not even the first page: Cloudflare is unreachable or refuses us, and every write would too.
            raise exc.cause from None
        log.error("%s", exc)
        return RuleListing(scope, exc.rules, complete=False)


def readable_scopes(client: Client, scopes: Sequence[Scope], purpose: str) -> list[RuleListing]:
    """Each scope's listing for something optional (`purpose`); a scope the token may not read (403) is
    left out with one warning naming the permission, never a failed run (DESIGN §9, §12)."""
    found, denied = [], []
    for scope in scopes:
        try:
            found.append(list_scope(client, scope))
        except CloudflareError as exc:
            if exc.status != 403:
                raise
            denied.append(scope)
    if denied:
        needed = permissions.needed("DELETE", denied[0].rules_path)
        log.warning(
            "not %s in %s: the token may not read them (HTTP 403; it needs %s); the rest of the run goes on",
            purpose,
            ", ".join(str(s) for s in denied),
            needed,
        )
    return found


class RulesBackend:
    """backend.Backend for IP Access Rules: one listing per scope, one request per write."""

    def __init__(self, client: Client, scopes: Sequence[Scope], mode: str) -> None:
        self.client = client
        self.scopes = tuple(scopes)
        self.mode = mode

    @property
    def requests(self) -> int:
        return self.client.requests

    @property
    def rate_limited(self) -> int:
        return self.client.rate_limited

    def listings(self, *, read_only: bool = False) -> list[RuleListing]:
        return [list_scope(self.client, scope) for scope in self.scopes]  # listing writes nothing either way

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
        return apply(plan, self.client, self.mode)

    def enforcement(self) -> tuple[str, ...]:
        return ()  # a rule enforces itself

    def existing(self) -> tuple[Found, ...]:
        found: list[Found] = []
        for scope in self.scopes:
            try:
                found.append(ScopeFound(scope, list_scope(self.client, scope)))
            except ReconcileError as exc:
                found.append(ScopeFound(scope, None, str(exc)))
        return tuple(found)

    def covering(self, ip: IPAddress) -> Iterator[RuleListing]:
        for scope in self.scopes:
            yield RuleListing(scope, tuple(self.client.find_rules(scope, ip.compressed)))

    def planned_as(self, ip: IPAddress) -> IPAddress:
        return ip

    def enforcement_status(self) -> tuple[ZoneEnforcement, ...]:
        return ()

    def close(self) -> None:
        self.client.close()
