"""The backends' read-only side for --check and --explain (existing, covering, planned_as,
enforcement_status), over answers held in memory, and check's rendering of what they return.

Each backend is the one the product's factory (cloudflare/open.py) makes from a config; its client's
session answers from a table instead of the network, and records every request: none may be a write.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from reconcile import config as config_mod
from reconcile.cloudflare import permissions
from reconcile.cloudflare.backend import Backend, ListFound, ScopeFound, ZoneEnforcement
from reconcile.cloudflare.credentials import Credentials
from reconcile.cloudflare.open import make_backend, make_client
from reconcile.core.model import Rule, Scope, ScopeKind
from reconcile.errors import CloudflareError
from reconcile.ops import check
from tests.support.fake_backend import SCOPE, FakeBackend

BASE = "/client/v4"
ACCOUNT = "01a7362d577a6c3019a474fd6f485823"
ZONE_A = "023e105f4ecef8ad9ca31a8372d0c353"
ZONE_B = "9a7806061c88ada191ed06f989cc3dac"
LIST_ID = "2c0fc9fa937b11eaa1b71c4d701ab86e"
TAG = "Blocked by fail2ban"

Answer = tuple[int, Any]  # HTTP status, `result` (or the error envelope's message for a status >= 400)
Route = Callable[[str, str, dict[str, str]], Answer]


class TableSession(requests.Session):
    """Answers `route(method, path, query)` in Cloudflare's envelope; records (method, path, query)."""

    def __init__(self, route: Route) -> None:
        super().__init__()
        self.route = route
        self.calls: list[tuple[str, str, dict[str, str]]] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        parts = urlsplit(str(url))
        path, query = parts.path.removeprefix(BASE), dict(parse_qsl(parts.query))
        self.calls.append((str(method), path, query))
        status, result = self.route(str(method), path, query)
        if status >= 400:
            error = {"code": 10000, "message": str(result)}
            body = {"success": False, "errors": [error], "messages": [], "result": None}
        else:
            body = {"success": True, "errors": [], "messages": [], "result": result}
        response = requests.Response()
        response.status_code = status
        response._content = json.dumps(body).encode()
        return response

    def writes(self) -> list[tuple[str, str]]:
        return [(method, path) for method, path, _ in self.calls if method != "GET"]


def open_backend(tmp_path: Path, route: Route, **cloudflare: object) -> tuple[Backend, TableSession]:
    config = config_mod.from_mapping(
        {"cloudflare": cloudflare, "policy": {"host_id": "web1"}}, tmp_path / "c.toml"
    )
    session = TableSession(route)
    return make_backend(config, make_client(config, Credentials(token="t" * 40), session=session)), session


def api_rule(rule_id: str, target: str, value: str, notes: str = "") -> dict[str, Any]:
    return {
        "id": rule_id,
        "mode": "block",
        "configuration": {"target": target, "value": value},
        "notes": notes,
    }


# --- IP Access Rules ------------------------------------------------------------------------------------


def rules_route(method: str, path: str, query: dict[str, str]) -> Answer:
    if path == f"/zones/{ZONE_B}/firewall/access_rules/rules":
        return 403, "Authentication error"
    assert path == f"/zones/{ZONE_A}/firewall/access_rules/rules", path
    rules = [
        api_rule("a" * 32, "ip", "45.155.205.1", f"{TAG} jail=sshd host=web1"),
        api_rule("b" * 32, "ip_range", "45.155.205.0/24", "partner office"),
        api_rule("c" * 32, "ip", "45.155.206.9"),
    ]
    wanted = query.get("configuration.value")
    return 200, [r for r in rules if wanted in (None, r["configuration"]["value"])]


def test_rules_existing_reads_each_scope_on_its_own(tmp_path: Path) -> None:
    backend, session = open_backend(tmp_path, rules_route, zone_ids=[ZONE_A, ZONE_B])
    first, second = backend.existing()
    assert isinstance(first, ScopeFound) and first.scope == Scope(ScopeKind.ZONE, ZONE_A) and not first.error
    assert first.listing is not None and first.listing.complete and len(first.listing.rules) == 3
    assert isinstance(second, ScopeFound) and second.scope == Scope(ScopeKind.ZONE, ZONE_B)
    assert second.listing is None and "HTTP 403" in second.error and "Authentication error" in second.error
    assert session.writes() == []


def test_rules_covering_finds_the_address_and_its_ranges_and_plans_it_as_itself(tmp_path: Path) -> None:
    backend, session = open_backend(tmp_path, rules_route, zone_ids=[ZONE_A])
    ip = ipaddress.ip_address("45.155.205.1")
    (listing,) = backend.covering(ip)
    assert listing.scope == Scope(ScopeKind.ZONE, ZONE_A)
    assert sorted(r.value for r in listing.rules) == ["45.155.205.0/24", "45.155.205.1"]
    assert backend.planned_as(ip) == ip and backend.enforcement_status() == ()
    assert [q["configuration.value"] for _, _, q in session.calls] == [
        "45.155.205.1",
        "45.155.205.0/24",
        "45.155.0.0/16",
    ]
    assert session.writes() == []


def test_rules_covering_yields_the_scopes_read_before_a_failure(tmp_path: Path) -> None:
    backend, _ = open_backend(tmp_path, rules_route, zone_ids=[ZONE_A, ZONE_B])
    read = []
    with pytest.raises(CloudflareError, match="HTTP 403"):
        for listing in backend.covering(ipaddress.ip_address("45.155.205.1")):
            read.append(listing.scope)
    assert read == [Scope(ScopeKind.ZONE, ZONE_A)]


# --- the account IP list --------------------------------------------------------------------------------

LISTS = f"/accounts/{ACCOUNT}/rules/lists"
ITEMS = [
    {"id": "1" * 32, "ip": "45.155.205.1", "comment": f"{TAG} jail=sshd host=web1"},
    {"id": "2" * 32, "ip": "2a06:4880:1:2::/64", "comment": f"{TAG} jail=sshd host=web1"},
    {"id": "3" * 32, "ip": "45.156.0.0/16", "comment": "office"},
]
ENFORCING = {"id": "r" * 32, "rules": [{"action": "block", "expression": "(ip.src in $fail2ban)"}]}


def list_route(*, listed: bool = True, lists_status: int = 200) -> Route:
    def route(method: str, path: str, query: dict[str, str]) -> Answer:
        if path == LISTS:
            if lists_status >= 400:
                return lists_status, "Authentication error"
            entry = {"id": LIST_ID, "name": "fail2ban", "kind": "ip", "num_items": len(ITEMS)}
            return 200, [entry] if listed else []
        if path == f"{LISTS}/{LIST_ID}/items":
            return 200, ITEMS
        if path == f"/zones/{ZONE_A}/rulesets/phases/http_request_firewall_custom/entrypoint":
            return 200, ENFORCING
        if path == f"/zones/{ZONE_B}/rulesets/phases/http_request_firewall_custom/entrypoint":
            return 404, "not found"  # the zone has no custom rules at all
        raise AssertionError(f"unexpected {method} {path}")

    return route


def list_backend(tmp_path: Path, route: Route, **keys: object) -> tuple[Backend, TableSession]:
    keys = {"backend": "list", "account_id": ACCOUNT, "zone_ids": [ZONE_A, ZONE_B], **keys}
    return open_backend(tmp_path, route, **keys)


def test_list_existing_reads_the_items_and_creates_no_missing_list(tmp_path: Path) -> None:
    backend, session = list_backend(tmp_path, list_route(), list_capacity=50)
    (found,) = backend.existing()
    assert isinstance(found, ListFound) and (found.account_id, found.name, found.capacity) == (
        ACCOUNT,
        "fail2ban",
        50,
    )
    assert found.listing is not None and len(found.listing.rules) == 3 and found.error == ""
    missing, session = list_backend(tmp_path, list_route(listed=False))
    assert missing.existing() == (ListFound(ACCOUNT, "fail2ban", 10000, None),)
    assert session.calls == [("GET", LISTS, {})]  # no POST: --check creates nothing
    refused, _ = list_backend(tmp_path, list_route(lists_status=403))
    (unreadable,) = refused.existing()
    assert isinstance(unreadable, ListFound) and unreadable.listing is None
    assert "HTTP 403" in unreadable.error


@pytest.mark.parametrize(
    ("address", "values"),
    [
        ("2a06:4880:1:2::7", ["2a06:4880:1:2::"]),  # inside the /64 item
        ("45.156.7.8", ["45.156.0.0/16"]),  # inside the operator's range
        ("45.155.205.1", ["45.155.205.1"]),
        ("45.155.205.2", []),
    ],
)
def test_list_covering_keeps_only_the_items_that_block_the_address(
    tmp_path: Path, address: str, values: list[str]
) -> None:
    backend, session = list_backend(tmp_path, list_route())
    (listing,) = backend.covering(ipaddress.ip_address(address))
    assert [r.value for r in listing.rules] == values
    assert session.writes() == []


def test_a_report_without_the_list_creates_none_and_plans_against_an_empty_one(tmp_path: Path) -> None:
    """DESIGN §7: --report writes nothing anywhere, with either backend: no list is created."""
    backend, session = list_backend(tmp_path, list_route(listed=False), waf_rule="off")
    (listing,) = backend.listings(read_only=True)
    assert listing.scope.kind == ScopeKind.LIST and listing.rules == () and listing.complete
    assert session.writes() == [] and session.calls == [("GET", LISTS, {})]
    present, session = list_backend(tmp_path, list_route(), waf_rule="off")
    (listing,) = present.listings(read_only=True)
    assert len(listing.rules) == 3 and session.writes() == []


def test_list_covering_without_a_list_yields_nothing(tmp_path: Path) -> None:
    backend, session = list_backend(tmp_path, list_route(listed=False))
    assert list(backend.covering(ipaddress.ip_address("45.155.205.1"))) == []
    assert session.writes() == []


def test_list_plans_an_ipv6_address_as_its_64(tmp_path: Path) -> None:
    backend, session = list_backend(tmp_path, list_route())
    assert backend.planned_as(ipaddress.ip_address("2a06:4880:1:2::7")) == ipaddress.ip_address(
        "2a06:4880:1:2::"
    )
    v4 = ipaddress.ip_address("45.155.205.1")
    assert backend.planned_as(v4) == v4
    assert session.calls == []


def test_enforcement_status_checks_each_zone_and_never_creates_the_rule(tmp_path: Path) -> None:
    backend, session = list_backend(tmp_path, list_route(), waf_rule="create")
    enforced, missing = backend.enforcement_status()
    assert enforced == ZoneEnforcement(ZONE_A, "fail2ban", "block", ())
    assert (missing.zone, missing.list_name, missing.mode) == (ZONE_B, "fail2ban", "block")
    (problem,) = missing.problems
    assert problem.startswith(f"zone {ZONE_B}: no WAF custom rule enforces the list")
    assert session.writes() == []  # waf_rule = "create" is for runs only
    off, session = list_backend(tmp_path, list_route(), waf_rule="off", zone_ids=[])
    assert off.enforcement_status() == () and session.calls == []


# --- check renders what the backend found ---------------------------------------------------------------


def test_check_renders_the_backends_findings_with_their_names_and_texts() -> None:
    fake = FakeBackend(
        rules={"45.155.205.1": Rule("a" * 32, SCOPE, "ip", "45.155.205.1", "block", "")},
        zones=(
            ZoneEnforcement(ZONE_A, "fail2ban", "block", ()),
            ZoneEnforcement(ZONE_B, "fail2ban", "block", ("zone B: no rule", "twice")),
        ),
    )
    backend_checks = check._backend_checks(fake)
    assert [(c.status, c.name, c.found, c.todo) for c in backend_checks] == [
        (check.Status.OK, "zone rules", f"{SCOPE.id}: 1 rules readable", ""),
        (
            check.Status.OK,
            "WAF rule",
            f"zone {ZONE_A} enforces the list: (ip.src in $fail2ban), action block",
            "",
        ),
        (
            check.Status.FAIL,
            "WAF rule",
            "zone B: no rule; twice",
            'add that rule, or set [cloudflare] waf_rule = "create"',
        ),
    ]
    assert fake.rules.keys() == {"45.155.205.1"}


@pytest.mark.parametrize(
    ("found", "status", "text", "todo"),
    [
        (
            ListFound(ACCOUNT, "fail2ban", 5, None),
            check.Status.WARN,
            f"account {ACCOUNT} has no list 'fail2ban' yet",
            "nothing to do: the first run creates it",
        ),
        (
            ListFound(ACCOUNT, "fail2ban", 5, None, f"GET /accounts/{ACCOUNT}/rules/lists -> HTTP 403: no"),
            check.Status.FAIL,
            f"GET /accounts/{ACCOUNT}/rules/lists -> HTTP 403: no",
            f"the token lacks {permissions.FILTER_LISTS}{permissions.SEP}Edit: add it to the token "
            "(README, 'Cloudflare API token')",
        ),
        (
            ScopeFound(Scope(ScopeKind.ACCOUNT, ACCOUNT), None, "GET /y -> HTTP 500: no"),
            check.Status.FAIL,
            "GET /y -> HTTP 500: no",
            "see the error",  # a 5xx says nothing about the token's permissions
        ),
        (
            ScopeFound(Scope(ScopeKind.ACCOUNT, ACCOUNT), None, "GET /y -> HTTP 401: no"),
            check.Status.FAIL,
            "GET /y -> HTTP 401: no",
            "see the error; the token may lack a permission (README, 'Cloudflare API token')",
        ),
    ],
)
def test_check_renders_a_missing_or_unreadable_place(
    found: ListFound | ScopeFound, status: check.Status, text: str, todo: str
) -> None:
    class Finds(FakeBackend):
        def existing(self) -> tuple[ListFound | ScopeFound, ...]:
            return (found,)

    (rendered,) = check._backend_checks(Finds())
    assert (rendered.status, rendered.found, rendered.todo) == (status, text, todo)
    assert rendered.name == ("IP list" if isinstance(found, ListFound) else "account rules")


def test_check_says_when_the_list_is_full(tmp_path: Path) -> None:
    backend, _ = list_backend(tmp_path, list_route(), list_capacity=3, waf_rule="off", zone_ids=[])
    (full,) = check._backend_checks(backend)
    assert (full.status, full.name) == (check.Status.WARN, "IP list")
    assert full.found.startswith(
        "list 'fail2ban': 3 items readable, room for 3: the account's lists are full"
    )
