"""Account IP lists (asynchronous bulk item operations) and zone WAF rulesets, for cf_emulator.py.

State and handlers only: cf_emulator routes the requests here after auth, rate limiting, faults and
schema validation, and wraps the (status, document) answers. Behaviour and its sources:

- Lists API endpoints, asynchronous item writes answering `operation_id`, operation status
  pending/running/completed/failed with `error` (developers.cloudflare.com/waf/tools/lists/lists-api/
  endpoints and /api/resources/rules/subresources/lists/subresources/bulk_operations/methods/get).
- A write while an operation is still being processed gets HTTP 429 (waf/tools/lists/lists-api/, "Rate
  limiting for Lists API requests"); the SDK docs say one pending bulk operation *per account*.
- IP items: IPv4 addresses, IPv4 CIDRs /8-/32, IPv6 CIDRs /12-/64 (waf/tools/lists/custom-lists; the API
  enforces /12, not the /4 once documented: cloudflare-docs PR #17133, error 10035 "invalid value for ip at
  position 0: filters.api.IPv6 CIDRs should have a prefix length from /12 to /64 inclusive"). A single
  IPv6 address is a /128, so it gets that error too.
- 10,000 items across all lists of an account, whatever the plan (waf/tools/lists, "Entitlements"). Going
  over it is an asynchronous failure: the schema's own example of `operation.error` is "This list is at the
  maximum number of items" (and terraform-provider-cloudflare #5590: it fails only when applied).
- Entry point missing: 404, code 10003, "could not find entrypoint ruleset in the <phase> phase"
  (a real answer quoted in ibm-mas/ansible-devops PR #2403).
Error codes marked "ours" below are assumptions (no public answer found).
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

PHASE = "http_request_firewall_custom"
DEFAULT_CAPACITY = 10_000  # items across all lists of an account (every plan)
DEFAULT_ITEMS_PER_PAGE = 25  # ours: the docs give no default
MAX_COMMENT = 500
IPV4_PREFIXES = range(8, 33)
IPV6_PREFIXES = range(12, 65)
LIST_NAME = re.compile(r"[a-z0-9_]{1,50}")
CAPACITY_ERROR = "This list is at the maximum number of items"
# Actions a custom rule may have in http_request_firewall_custom.
CUSTOM_ACTIONS = frozenset({"block", "challenge", "js_challenge", "managed_challenge", "log", "skip"})

E_NOT_FOUND, E_NO_ROUTE = 10001, 7003
E_INVALID_ITEM = 10035  # Cloudflare's, for a refused item value
E_DUPLICATE_ITEM = 10028  # Cloudflare's filters.api.duplicate_item_value (seen in crowdsec issue #31)
E_NO_ENTRYPOINT = 10003  # Cloudflare's
E_LIST_BUSY = 10046  # ours (the 429 is documented, its code is not)
E_LIST_INVALID, E_LIST_DUPLICATE = 10013, 10026  # ours
E_RULESET_INVALID, E_RULESET_EXISTS = 20021, 20217  # ours

Answer = tuple[int, dict[str, Any]]

_LISTS = re.compile(r"/accounts/([^/]+)/rules/lists")
_OPERATION = re.compile(r"/accounts/([^/]+)/rules/lists/bulk_operations/([^/]+)")
_LIST = re.compile(r"/accounts/([^/]+)/rules/lists/([^/]+)")
_ITEMS = re.compile(r"/accounts/([^/]+)/rules/lists/([^/]+)/items")
_ENTRYPOINT = re.compile(r"/zones/([^/]+)/rulesets/phases/([^/]+)/entrypoint")
_RULESETS = re.compile(r"/zones/([^/]+)/rulesets")
_RULES = re.compile(r"/zones/([^/]+)/rulesets/([^/]+)/rules")
_RULESET = re.compile(r"/zones/([^/]+)/rulesets/([^/]+)")
# (name, pattern, methods), tried in order: bulk_operations before {list_id}.
_ROUTES: tuple[tuple[str, re.Pattern[str], frozenset[str]], ...] = (
    ("lists", _LISTS, frozenset({"GET", "POST"})),
    ("operation", _OPERATION, frozenset({"GET"})),
    ("list", _LIST, frozenset({"GET"})),
    ("items", _ITEMS, frozenset({"GET", "POST", "PUT", "DELETE"})),
    ("entrypoint", _ENTRYPOINT, frozenset({"GET", "PUT"})),
    ("rulesets", _RULESETS, frozenset({"POST"})),
    ("rules", _RULES, frozenset({"POST"})),
    ("ruleset", _RULESET, frozenset({"GET"})),
)


def route(method: str, path: str) -> tuple[str, tuple[str, ...]] | None:
    """The list/ruleset endpoint this request is for, with its path ids; None when it is none of them."""
    for name, pattern, methods in _ROUTES:
        m = pattern.fullmatch(path)
        if m is not None:
            if name == "list" and m[2] == "bulk_operations":
                return None
            return (name, m.groups()) if method in methods else None
    return None


def is_lists_route(name: str) -> bool:
    return name in ("lists", "operation", "list", "items")


# ---------------------------------------------------------------------------------------------- spec


def prepare_spec(spec: dict[str, Any]) -> None:
    """Patch the lists and rulesets quirks (cloudflare-openapi-subset.SOURCE.md) out, in memory."""
    schemas = spec["components"]["schemas"]
    # Path-parameter ids marked readOnly: openapi-core would reject every request that carries one.
    for name in ("lists_list_id", "lists_operation_id"):
        schemas[name].pop("readOnly", None)
    # Lists responses: the collection envelope demands an array `result` that the single-object answers
    # then contradict (so no answer could validate). Keep the common envelope, drop the array demand.
    schemas["lists_api-response-collection"] = {
        "allOf": [{"$ref": "#/components/schemas/lists_api-response-common"}],
        "type": "object",
    }
    # lists_item is oneOf [ip (a string schema), redirect, hostname, asn]: no item object matches any of
    # them. Its `properties` still check the fields.
    schemas["lists_item"].pop("oneOf", None)
    # Rulesets quirk 1: required read-only id/version without readOnly on the property itself.
    ruleset = schemas["rulesets_Ruleset"]["properties"]
    ruleset["id"]["readOnly"] = True
    ruleset["version"] = {
        "allOf": [{"$ref": "#/components/schemas/rulesets_RulesetVersion"}],
        "readOnly": True,
    }
    # managed_challenge and js_challenge are in the discriminator but not in ^[a-z]+$.
    schemas["rulesets_RuleAction"]["pattern"] = "^[a-z_]+$"


def validation_body(method: str, path: str, body: bytes | None) -> bytes | None:
    """The body to validate: without `position` on POST …/rules (quirk 4: it can never validate)."""
    found = route(method, path)
    if found is None or found[0] != "rules" or not body:
        return body
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    if not isinstance(doc, dict) or "position" not in doc:
        return body
    doc.pop("position")
    return json.dumps(doc).encode()


# -------------------------------------------------------------------------------------------- values


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ok(result: Any, **extra: Any) -> dict[str, Any]:
    return {"success": True, "errors": [], "messages": [], "result": result, **extra}


def _fail(status: int, code: int, message: str) -> Answer:
    return status, {
        "success": False,
        "errors": [{"code": code, "message": message}],
        "messages": [],
        "result": None,
    }


def item_key(ip: str) -> str:
    """What Cloudflare compares for an upsert: 10.0.0.1 and 10.0.0.1/32 are one item, case is ignored."""
    return str(ipaddress.ip_network(ip, strict=False))


def ip_problem(value: Any) -> str | None:
    """Why Cloudflare refuses this `ip` value of an item, or None."""
    if not isinstance(value, str) or not value:
        return "filters.api.ip is required"
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError:
        return "filters.api.not a valid IPv4 address, IPv4 CIDR or IPv6 CIDR"
    if net.version == 4:
        if net.prefixlen not in IPV4_PREFIXES:
            return "filters.api.IPv4 CIDRs should have a prefix length from /8 to /32 inclusive"
    elif net.prefixlen not in IPV6_PREFIXES:
        # A bare IPv6 address is a /128: refused with the same error.
        return "filters.api.IPv6 CIDRs should have a prefix length from /12 to /64 inclusive"
    return None


def _stored_ip(value: str) -> str:
    """How the item reads back: lowercase, compressed (Cloudflare lowercases IPv6 when saving)."""
    return str(ipaddress.ip_network(value)) if "/" in value else str(ipaddress.ip_address(value))


def _hex_id() -> str:
    return uuid.uuid4().hex


# ------------------------------------------------------------------------------------------- records


@dataclass
class Operation:
    """One asynchronous bulk operation; `started`/`due` are emulated seconds (the emulator's clock)."""

    id: str
    account_id: str
    list_id: str
    method: str  # POST (upsert) | PUT (replace all) | DELETE
    items: list[dict[str, Any]]
    created: float
    started: float
    due: float
    status: str = "pending"
    error: str | None = None
    completed: str | None = None
    fail_with: str | None = None  # set by fail_next_operation

    def answer(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.completed is not None:
            doc["completed"] = self.completed
        if self.error is not None:
            doc["error"] = self.error
        return doc


@dataclass
class _List:
    meta: dict[str, Any]
    items: dict[str, dict[str, Any]] = field(default_factory=dict)  # item_key -> item
    seq: dict[str, int] = field(default_factory=dict)  # item_key -> insertion sequence (cursor order)


# ------------------------------------------------------------------------------------------- state


class ListsState:
    """Lists, items, bulk operations and zone rulesets; thread-safe. Options are plain attributes."""

    def __init__(
        self,
        *,
        accounts: Iterable[str],
        zones: Iterable[str],
        clock: Callable[[], float],
        now: Callable[[], datetime],
        operation_delay: float = 0.0,
        busy_429: bool = True,
        capacity_limit: int = DEFAULT_CAPACITY,
    ) -> None:
        if operation_delay < 0 or capacity_limit < 0:
            raise ValueError("list_operation_delay and list_capacity_limit must be >= 0")
        self._clock, self._now = clock, now
        self.operation_delay = operation_delay
        self.busy_429 = busy_429
        self.capacity_limit = capacity_limit
        self._lock = threading.RLock()
        self._lists: dict[str, dict[str, _List]] = {a: {} for a in accounts}  # account -> list_id -> list
        self._operations: dict[str, Operation] = {}
        self._fail_next: list[str] = []
        self._seq = 0
        self.busy_refused = 0  # 429s for a write while an operation ran
        # zone -> ruleset_id -> ruleset; entry points: (zone, phase) -> ruleset_id
        self._rulesets: dict[str, dict[str, dict[str, Any]]] = {z: {} for z in zones}
        self._entrypoints: dict[tuple[str, str], str] = {}

    # ------------------------------------------------------------------------- operations engine

    def _advance(self) -> None:
        """Bring every operation up to the clock: pending -> running -> completed / failed, in order."""
        elapsed = self._clock()
        for op in self._operations.values():  # insertion order = the account's queue order
            if op.status in ("completed", "failed"):
                continue
            if elapsed >= op.due:
                self._apply(op)
            elif elapsed >= op.started + (op.due - op.started) / 2:
                op.status = "running"

    def _apply(self, op: Operation) -> None:
        """Carry the operation out all at once, or fail it and change nothing."""
        lst = self._lists[op.account_id].get(op.list_id)
        op.completed = _iso(self._now())
        if op.fail_with is not None:
            op.status, op.error = "failed", op.fail_with
            return
        if lst is None:
            op.status, op.error = "failed", "list not found"
            return
        stamp = _iso(self._now())
        if op.method == "DELETE":
            ids = {i["id"] for i in op.items}
            for key in [k for k, item in lst.items.items() if item["id"] in ids]:
                del lst.items[key]
                del lst.seq[key]
        else:
            new = {item_key(i["ip"]): i for i in op.items}
            others = sum(
                len(other.items) for lid, other in self._lists[op.account_id].items() if lid != op.list_id
            )
            mine = len(new) if op.method == "PUT" else len(set(lst.items) | set(new))
            if others + mine > self.capacity_limit:
                op.status, op.error = "failed", CAPACITY_ERROR
                return
            if op.method == "PUT":
                lst.items, lst.seq = {}, {}
            for key, given in new.items():
                existing = lst.items.get(key)
                if existing is not None:  # upsert: the comment is replaced
                    existing.pop("comment", None)
                    if "comment" in given:
                        existing["comment"] = given["comment"]
                    existing["modified_on"] = stamp
                    continue
                item: dict[str, Any] = {"id": _hex_id(), "ip": _stored_ip(given["ip"])}
                if "comment" in given:
                    item["comment"] = given["comment"]
                item["created_on"] = item["modified_on"] = stamp
                lst.items[key] = item
                self._seq += 1
                lst.seq[key] = self._seq
        lst.meta["modified_on"] = stamp
        op.status = "completed"

    def _running(self, account_id: str) -> Operation | None:
        return next(
            (
                o
                for o in self._operations.values()
                if o.account_id == account_id and o.status not in ("completed", "failed")
            ),
            None,
        )

    def _queue(self, account_id: str, list_id: str, method: str, items: list[dict[str, Any]]) -> Operation:
        now = self._clock()
        # Operations of one account run one after another: this one starts when the last one is done.
        last_due = max((o.due for o in self._operations.values() if o.account_id == account_id), default=now)
        started = max(now, last_due)
        op = Operation(
            id=_hex_id(),
            account_id=account_id,
            list_id=list_id,
            method=method,
            items=copy.deepcopy(items),
            created=now,
            started=started,
            due=started + self.operation_delay,
            fail_with=self._fail_next.pop(0) if self._fail_next else None,
        )
        self._operations[op.id] = op
        self._advance()  # a zero delay completes at once
        return op

    # --------------------------------------------------------------------------------- handlers

    def handle(
        self, name: str, ids: tuple[str, ...], method: str, query: Mapping[str, str], body: Any
    ) -> Answer:
        """Answer one (already authenticated and schema-checked) request."""
        with self._lock:
            self._advance()
            if is_lists_route(name):
                if ids[0] not in self._lists:
                    return _fail(
                        404,
                        E_NO_ROUTE,
                        "Could not route to the account, perhaps your object identifier is invalid?",
                    )
                return self._lists_handle(name, ids, method, query, body)
            if ids[0] not in self._rulesets:
                return _fail(
                    404, E_NO_ROUTE, "Could not route to the zone, perhaps your object identifier is invalid?"
                )
            return self._rulesets_handle(name, ids, method, body)

    def _list_doc(self, account_id: str, lst: _List) -> dict[str, Any]:
        doc = copy.deepcopy(lst.meta)
        doc["num_items"] = len(lst.items)
        ref = f"${doc['name']}"
        doc["num_referencing_filters"] = sum(
            1
            for zone in self._rulesets.values()
            for ruleset in zone.values()
            for rule in ruleset["rules"]
            if re.search(re.escape(ref) + r"\b", rule.get("expression", ""))
        )
        return doc

    def _lists_handle(
        self, name: str, ids: tuple[str, ...], method: str, query: Mapping[str, str], body: Any
    ) -> Answer:
        account_id = ids[0]
        lists = self._lists[account_id]
        if name == "lists":
            if method == "GET":
                return 200, _ok([self._list_doc(account_id, lst) for lst in lists.values()])
            return self._create_list(account_id, body)
        if name == "operation":
            op = self._operations.get(ids[1])
            if op is None or op.account_id != account_id:
                return _fail(404, E_NOT_FOUND, "filters.api.not_found: operation not found")
            return 200, _ok(op.answer())
        lst = lists.get(ids[1])
        if lst is None:
            return _fail(404, E_NOT_FOUND, "filters.api.not_found: list not found")
        if name == "list":
            return 200, _ok(self._list_doc(account_id, lst))
        if method == "GET":
            return self._get_items(lst, query)
        return self._write_items(account_id, ids[1], lst, method, body)

    def _create_list(self, account_id: str, body: Any) -> Answer:
        name, kind = body.get("name"), body.get("kind")
        if not isinstance(name, str) or LIST_NAME.fullmatch(name) is None:
            return _fail(
                400,
                E_LIST_INVALID,
                "filters.api.invalid_name: the name may only contain lowercase letters, numbers and "
                "underscores, at most 50 characters",
            )
        if kind != "ip":
            return _fail(400, E_LIST_INVALID, f"filters.api.invalid_kind: kind {kind!r} is not emulated")
        if any(lst.meta["name"] == name for lst in self._lists[account_id].values()):
            return _fail(400, E_LIST_DUPLICATE, "filters.api.duplicate_name: a list with that name exists")
        stamp = _iso(self._now())
        meta = {
            "id": _hex_id(),
            "name": name,
            "description": body.get("description", ""),
            "kind": kind,
            "created_on": stamp,
            "modified_on": stamp,
        }
        lst = _List(meta)
        self._lists[account_id][meta["id"]] = lst
        return 200, _ok(self._list_doc(account_id, lst))

    def _get_items(self, lst: _List, query: Mapping[str, str]) -> Answer:
        try:
            per_page = int(query.get("per_page", DEFAULT_ITEMS_PER_PAGE))
        except ValueError:
            return _fail(400, E_LIST_INVALID, "filters.api.invalid per_page")
        if not 1 <= per_page <= 500:
            return _fail(400, E_LIST_INVALID, "filters.api.per_page must be between 1 and 500")
        after = 0
        cursor = query.get("cursor")
        if cursor:
            try:
                after = int(base64.urlsafe_b64decode(cursor.encode()).decode().removeprefix("after:"))
            except (ValueError, binascii.Error, UnicodeDecodeError):
                return _fail(400, E_LIST_INVALID, "filters.api.invalid cursor")
        search = query.get("search", "")
        keys = sorted(
            (s, k) for k, s in lst.seq.items() if s > after and lst.items[k]["ip"].startswith(search)
        )
        page = keys[:per_page]
        cursors: dict[str, str] = {}
        if cursor:
            cursors["before"] = cursor
        if len(keys) > per_page:
            cursors["after"] = base64.urlsafe_b64encode(f"after:{page[-1][0]}".encode()).decode()
        # An item is a flat dict of strings: a shallow copy is a deep one, in a third of a page's time (the
        # emulator's own CPU would count in the latency benchmark's ban to edge).
        result = [dict(lst.items[k]) for _, k in page]
        return 200, _ok(result, result_info={"cursors": cursors})

    def _write_items(self, account_id: str, list_id: str, lst: _List, method: str, body: Any) -> Answer:
        if self.busy_429 and self._running(account_id) is not None:
            self.busy_refused += 1
            return _fail(
                429,
                E_LIST_BUSY,
                "filters.api.too_many_pending_operations: a bulk operation is still being processed",
            )
        if method == "DELETE":
            items = body.get("items") if isinstance(body, dict) else None
            if (
                not isinstance(items, list)
                or not items
                or not all(isinstance(i, dict) and isinstance(i.get("id"), str) for i in items)
            ):
                return _fail(400, E_INVALID_ITEM, "filters.api.items must be a non-empty list of {id}")
            return 200, _ok({"operation_id": self._queue(account_id, list_id, method, items).id})
        if not isinstance(body, list):
            return _fail(400, E_INVALID_ITEM, "filters.api.the body must be a list of items")
        seen: set[str] = set()
        for position, item in enumerate(body):
            ip = item.get("ip") if isinstance(item, dict) else None
            problem = ip_problem(ip)
            if problem is not None:
                return _fail(400, E_INVALID_ITEM, f"invalid value for ip at position {position}: {problem}")
            comment = item.get("comment", "")
            if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
                return _fail(
                    400,
                    E_INVALID_ITEM,
                    f"invalid value for comment at position {position}: filters.api.comment longer than "
                    f"{MAX_COMMENT} characters",
                )
            key = item_key(str(ip))
            if key in seen:
                return _fail(
                    400,
                    E_DUPLICATE_ITEM,
                    f"{ip} is not a valid value for ip because filters.api.duplicate_item_value",
                )
            seen.add(key)
        return 200, _ok({"operation_id": self._queue(account_id, list_id, method, body).id})

    # --------------------------------------------------------------------------------- rulesets

    def _rulesets_handle(self, name: str, ids: tuple[str, ...], method: str, body: Any) -> Answer:
        zone_id = ids[0]
        zone = self._rulesets[zone_id]
        if name == "entrypoint":
            phase = ids[1]
            ruleset_id = self._entrypoints.get((zone_id, phase))
            if method == "GET":
                if ruleset_id is None:
                    return _fail(
                        404, E_NO_ENTRYPOINT, f"could not find entrypoint ruleset in the {phase} phase"
                    )
                return 200, _ok(copy.deepcopy(zone[ruleset_id]))
            return self._put_entrypoint(zone_id, phase, body)
        if name == "rulesets":
            return self._create_ruleset(zone_id, body)
        ruleset = zone.get(ids[1])
        if ruleset is None:
            return _fail(404, E_NOT_FOUND, f"could not find ruleset {ids[1]}")
        if name == "ruleset":
            return 200, _ok(copy.deepcopy(ruleset))
        return self._add_rule(ruleset, body)

    def _new_rule(self, given: Mapping[str, Any], phase: str) -> dict[str, Any] | str:
        """A stored rule from a request's rule (or why it is refused)."""
        action = given.get("action")
        if phase == PHASE and action not in CUSTOM_ACTIONS:
            return f"action {action!r} is not allowed in phase {phase}"
        expression = given.get("expression")
        if not isinstance(expression, str) or not expression.strip():
            return "the expression is empty"
        rule_id = _hex_id()
        rule: dict[str, Any] = {"id": rule_id, "version": "1", "action": action, "expression": expression}
        rule["description"] = given.get("description", "")
        for extra in ("action_parameters", "logging"):
            if extra in given:
                rule[extra] = copy.deepcopy(given[extra])
        rule["enabled"] = given.get("enabled", True)
        rule["ref"] = given.get("ref", rule_id)
        rule["last_updated"] = _iso(self._now())
        return rule

    def _new_rules(self, given: Any, phase: str) -> list[dict[str, Any]] | str:
        if not isinstance(given, list):
            return "rules must be a list"
        rules = []
        for position, one in enumerate(given):
            rule = self._new_rule(one, phase) if isinstance(one, dict) else "a rule must be an object"
            if isinstance(rule, str):
                return f"rules[{position}]: {rule}"
            rules.append(rule)
        return rules

    def _store_ruleset(
        self, zone_id: str, phase: str, rules: list[dict[str, Any]], name: str, description: str
    ) -> dict[str, Any]:
        ruleset_id = _hex_id()
        ruleset: dict[str, Any] = {
            "id": ruleset_id,
            "name": name,
            "description": description,
            "kind": "zone",
            "phase": phase,
            "version": "1",
            "last_updated": _iso(self._now()),
            "rules": rules,
        }
        self._rulesets[zone_id][ruleset_id] = ruleset
        self._entrypoints[(zone_id, phase)] = ruleset_id
        return ruleset

    def _create_ruleset(self, zone_id: str, body: Any) -> Answer:
        if body.get("kind") != "zone":
            return _fail(
                400, E_RULESET_INVALID, "only rulesets of kind zone can be created at the zone level here"
            )
        phase = body["phase"]
        if (zone_id, phase) in self._entrypoints:
            return _fail(
                400,
                E_RULESET_EXISTS,
                f"a ruleset of kind zone already exists for phase {phase}: use its entrypoint",
            )
        rules = self._new_rules(body.get("rules"), phase)
        if isinstance(rules, str):
            return _fail(400, E_RULESET_INVALID, rules)
        ruleset = self._store_ruleset(zone_id, phase, rules, body["name"], body.get("description", ""))
        return 200, _ok(copy.deepcopy(ruleset))

    def _put_entrypoint(self, zone_id: str, phase: str, body: Any) -> Answer:
        """Replace the entry point's rules (creating it when missing); unchanged rules keep their identity."""
        ruleset_id = self._entrypoints.get((zone_id, phase))
        if ruleset_id is None:
            rules = self._new_rules(body.get("rules"), phase)
            if isinstance(rules, str):
                return _fail(400, E_RULESET_INVALID, rules)
            name = body.get("name", "default")
            return 200, _ok(
                copy.deepcopy(self._store_ruleset(zone_id, phase, rules, name, body.get("description", "")))
            )
        ruleset = self._rulesets[zone_id][ruleset_id]
        old = {r["id"]: r for r in ruleset["rules"]}
        new_rules = []
        for position, given in enumerate(body.get("rules", [])):
            fresh = self._new_rule(given, phase)
            if isinstance(fresh, str):
                return _fail(400, E_RULESET_INVALID, f"rules[{position}]: {fresh}")
            before = old.get(given.get("id", ""))
            if before is not None:
                fresh["id"] = before["id"]
                fresh["ref"] = given.get("ref", before["ref"])
                same = {k: v for k, v in fresh.items() if k not in ("version", "last_updated")} == {
                    k: v for k, v in before.items() if k not in ("version", "last_updated")
                }
                if same:
                    fresh = copy.deepcopy(before)
                else:
                    fresh["version"] = str(int(before["version"]) + 1)
            new_rules.append(fresh)
        ruleset["rules"] = new_rules
        for key in ("name", "description"):
            if key in body:
                ruleset[key] = body[key]
        self._bump(ruleset)
        return 200, _ok(copy.deepcopy(ruleset))

    def _add_rule(self, ruleset: dict[str, Any], body: Any) -> Answer:
        rule = self._new_rule(body, ruleset["phase"])
        if isinstance(rule, str):
            return _fail(400, E_RULESET_INVALID, rule)
        rules = ruleset["rules"]
        index = len(rules)  # by default at the end
        position = body.get("position")
        if isinstance(position, dict):
            ids = [r["id"] for r in rules]
            if "index" in position:
                index = min(max(int(position["index"]) - 1, 0), len(rules))
            elif position.get("before"):
                if position["before"] not in ids:
                    return _fail(400, E_RULESET_INVALID, "position.before: no such rule")
                index = ids.index(position["before"])
            elif "before" in position:
                index = 0
            elif position.get("after"):
                if position["after"] not in ids:
                    return _fail(400, E_RULESET_INVALID, "position.after: no such rule")
                index = ids.index(position["after"]) + 1
        rules.insert(index, rule)
        self._bump(ruleset)
        return 200, _ok(copy.deepcopy(ruleset))

    def _bump(self, ruleset: dict[str, Any]) -> None:
        ruleset["version"] = str(int(ruleset["version"]) + 1)
        ruleset["last_updated"] = _iso(self._now())

    # ---------------------------------------------------------------------------- test helpers

    def lists(self, account_id: str) -> list[dict[str, Any]]:
        with self._lock:
            self._advance()
            return [self._list_doc(account_id, lst) for lst in self._lists[account_id].values()]

    def create_list(self, account_id: str, name: str, description: str = "") -> dict[str, Any]:
        with self._lock:
            status, doc = self._create_list(
                account_id, {"name": name, "kind": "ip", "description": description}
            )
            if status != 200:
                raise ValueError(doc["errors"][0]["message"])
            result: dict[str, Any] = doc["result"]
            return result

    def items(self, account_id: str, list_id: str) -> list[dict[str, Any]]:
        with self._lock:
            self._advance()
            lst = self._lists[account_id][list_id]
            return [copy.deepcopy(lst.items[k]) for k in sorted(lst.seq, key=lst.seq.__getitem__)]

    def has_item(self, account_id: str, name: str, ip: str) -> bool:
        with self._lock:
            self._advance()
            return any(
                lst.meta["name"] == name and item_key(ip) in lst.items
                for lst in self._lists[account_id].values()
            )

    def add_item(
        self,
        account_id: str,
        list_id: str,
        ip: str,
        comment: str | None = None,
        *,
        created_on: datetime | None = None,
    ) -> dict[str, Any]:
        problem = ip_problem(ip)
        if problem is not None:
            raise ValueError(problem)
        if comment is not None and len(comment) > MAX_COMMENT:
            raise ValueError("comment longer than 500 characters")
        with self._lock:
            lst = self._lists[account_id][list_id]
            key = item_key(ip)
            if key in lst.items:
                raise ValueError(f"an item for {ip} exists")
            stamp = _iso(created_on or self._now())
            item: dict[str, Any] = {"id": _hex_id(), "ip": _stored_ip(ip)}
            if comment is not None:
                item["comment"] = comment
            item["created_on"] = item["modified_on"] = stamp
            lst.items[key] = item
            self._seq += 1
            lst.seq[key] = self._seq
            return copy.deepcopy(item)

    def operations(self) -> list[Operation]:
        with self._lock:
            self._advance()
            return copy.deepcopy(list(self._operations.values()))

    def fail_next_operation(self, error: str, count: int) -> None:
        with self._lock:
            self._fail_next.extend([error] * count)

    def seed_entrypoint(
        self, zone_id: str, rules: Iterable[Mapping[str, Any]], phase: str, name: str
    ) -> dict[str, Any]:
        with self._lock:
            if (zone_id, phase) in self._entrypoints:
                raise ValueError(f"zone {zone_id} already has a {phase} entry point")
            made = self._new_rules([dict(r) for r in rules], phase)
            if isinstance(made, str):
                raise ValueError(made)
            return copy.deepcopy(self._store_ruleset(zone_id, phase, made, name, ""))

    def ruleset(self, zone_id: str, phase: str) -> dict[str, Any] | None:
        with self._lock:
            ruleset_id = self._entrypoints.get((zone_id, phase))
            return None if ruleset_id is None else copy.deepcopy(self._rulesets[zone_id][ruleset_id])


class ListsHelpers:
    """Test helpers mixed into CloudflareEmulator (its state is `self.lists_state`)."""

    lists_state: ListsState

    def lists(self, account_id: str | None = None) -> list[dict[str, Any]]:
        """The account's lists as GET …/rules/lists shows them (num_items included)."""
        return self.lists_state.lists(account_id or self._default_account())

    def create_list(
        self, name: str, *, account_id: str | None = None, description: str = ""
    ) -> dict[str, Any]:
        """Seed an (empty, kind ip) list directly; ValueError where the API would refuse."""
        return self.lists_state.create_list(account_id or self._default_account(), name, description)

    def items(self, list_id: str, *, account_id: str | None = None) -> list[dict[str, Any]]:
        """Every item of one list in cursor order, as the API shows them (completed operations only)."""
        return self.lists_state.items(account_id or self._default_account(), list_id)

    def add_item(
        self,
        list_id: str,
        ip: str,
        comment: str | None = None,
        *,
        account_id: str | None = None,
        created_on: datetime | None = None,
    ) -> dict[str, Any]:
        """Seed an item directly (a foreign one, say): no request, no operation; ValueError on a bad value."""
        return self.lists_state.add_item(
            account_id or self._default_account(), list_id, ip, comment, created_on=created_on
        )

    def has_item(self, name: str, ip: str, *, account_id: str | None = None) -> bool:
        """Whether the list `name` holds an item for `ip` now (completed operations only): O(1) per list,
        for polling (the latency benchmark)."""
        return self.lists_state.has_item(account_id or self._default_account(), name, ip)

    @property
    def operations(self) -> list[Operation]:
        """Every bulk operation so far (snapshots, status brought up to the clock), oldest first."""
        return self.lists_state.operations()

    def fail_next_operation(
        self, error: str = "Internal error while applying the operation", count: int = 1
    ) -> None:
        """The next `count` bulk operations are accepted, then end `failed` with `error`, unapplied."""
        self.lists_state.fail_next_operation(error, count)

    def seed_entrypoint(
        self, zone_id: str, rules: Iterable[Mapping[str, Any]], *, phase: str = PHASE, name: str = "default"
    ) -> dict[str, Any]:
        """Create a zone's entry point with these rules ({action, expression, description?, ...})."""
        return self.lists_state.seed_entrypoint(zone_id, rules, phase, name)

    def zone_ruleset(self, zone_id: str, *, phase: str = PHASE) -> dict[str, Any] | None:
        """The zone's entry-point ruleset exactly as stored (None when it has none)."""
        return self.lists_state.ruleset(zone_id, phase)

    def zone_rules(self, zone_id: str, *, phase: str = PHASE) -> list[dict[str, Any]]:
        """The entry point's rules exactly as stored ([] when it has none): compare them byte for byte."""
        ruleset = self.lists_state.ruleset(zone_id, phase)
        return [] if ruleset is None else list(ruleset["rules"])

    def _default_account(self) -> str:
        accounts = list(self.lists_state._lists)
        if not accounts:
            raise ValueError("the emulator has no account")
        return accounts[0]
