"""The emulator's account IP lists and zone rulesets behave like Cloudflare's: `requests` on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.support.cf_emulator import (
    ACCOUNT_ID,
    TOKEN,
    ZONE_ID,
    ZONE_ID_2,
    CloudflareEmulator,
    checked_emulator,
)
from tests.support.cf_lists import CAPACITY_ERROR, PHASE

LISTS = f"/accounts/{ACCOUNT_ID}/rules/lists"
RULESETS = f"/zones/{ZONE_ID}/rulesets"
ENTRYPOINT = f"{RULESETS}/phases/{PHASE}/entrypoint"
OPERATOR_RULES = [
    {"action": "skip", "expression": '(http.request.uri.path eq "/health")', "description": "ops: health"},
    {"action": "managed_challenge", "expression": '(ip.src.country eq "XX")', "description": "ops: XX"},
]
FAIL2BAN_RULE = {"action": "block", "expression": "(ip.src in $fail2ban)", "description": "fail2ban bans"}


class Api:
    """A token session against one emulator; paths without the /client/v4 prefix."""

    def __init__(self, cf: CloudflareEmulator) -> None:
        self.cf = cf
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"Bearer {TOKEN}"

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.s.request(method, self.cf.base_url + path, timeout=10, **kwargs)

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        r = self.call(method, path, **kwargs)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["success"] is True and doc["errors"] == []
        return doc["result"]

    def new_list(self, name: str = "fail2ban") -> str:
        result = self.ok("POST", LISTS, json={"name": name, "kind": "ip", "description": "bans"})
        return str(result["id"])

    def write(self, list_id: str, method: str, body: Any) -> str:
        return str(self.ok(method, f"{LISTS}/{list_id}/items", json=body)["operation_id"])

    def operation(self, op_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.ok("GET", f"{LISTS}/bulk_operations/{op_id}")
        return result


def error_of(r: requests.Response) -> tuple[int, int, str]:
    doc = r.json()
    assert doc["success"] is False and doc["result"] is None
    return r.status_code, doc["errors"][0]["code"], doc["errors"][0]["message"]


@pytest.fixture
def api() -> Iterator[Api]:
    with checked_emulator() as cf:
        yield Api(cf)


# ------------------------------------------------------------------------------------------- lists


def test_create_get_and_list_lists(api: Api) -> None:
    assert api.ok("GET", LISTS) == []
    list_id = api.new_list()
    one = api.ok("GET", f"{LISTS}/{list_id}")
    assert one["name"] == "fail2ban" and one["kind"] == "ip" and one["description"] == "bans"
    assert one["num_items"] == 0 and one["num_referencing_filters"] == 0
    assert len(list_id) == 32 and int(list_id, 16) >= 0
    assert [entry["id"] for entry in api.ok("GET", LISTS)] == [list_id]
    assert api.cf.lists()[0]["id"] == list_id


def test_list_name_rules_and_duplicate_name_refused(api: Api) -> None:
    api.new_list()
    status, _, message = error_of(api.call("POST", LISTS, json={"name": "fail2ban", "kind": "ip"}))
    assert status == 400 and "duplicate" in message
    # The schema allows capitals; Cloudflare does not (lowercase letters, digits, underscore).
    status, _, message = error_of(api.call("POST", LISTS, json={"name": "Fail2ban", "kind": "ip"}))
    assert status == 400 and "lowercase" in message
    assert len(api.cf.lists()) == 1


def test_unknown_list_and_operation_are_404(api: Api) -> None:
    missing = "f" * 32
    assert error_of(api.call("GET", f"{LISTS}/{missing}"))[0] == 404
    assert error_of(api.call("GET", f"{LISTS}/{missing}/items"))[0] == 404
    assert error_of(api.call("GET", f"{LISTS}/bulk_operations/{missing}"))[0] == 404


# ------------------------------------------------------------------------------------------- items


def test_post_items_then_read_them_back(api: Api) -> None:
    list_id = api.new_list()
    op = api.write(list_id, "POST", [{"ip": "192.0.2.1", "comment": "a"}, {"ip": "2001:DB8:1:2::/64"}])
    assert api.operation(op)["status"] == "completed"
    items = api.ok("GET", f"{LISTS}/{list_id}/items")
    assert [(i["ip"], i.get("comment")) for i in items] == [("192.0.2.1", "a"), ("2001:db8:1:2::/64", None)]
    assert all(len(i["id"]) == 32 and i["created_on"].endswith("Z") for i in items)
    assert api.ok("GET", f"{LISTS}/{list_id}")["num_items"] == 2
    assert api.cf.items(list_id) == items


def test_post_is_an_upsert_that_replaces_the_comment(api: Api) -> None:
    list_id = api.new_list()
    foreign = api.cf.add_item(list_id, "198.51.100.7", "operator: keep")
    api.write(list_id, "POST", [{"ip": "192.0.2.1", "comment": "old"}])
    before = api.cf.items(list_id)[1]
    api.write(
        list_id, "POST", [{"ip": "192.0.2.1/32", "comment": "new"}, {"ip": "192.0.2.2", "comment": "b"}]
    )
    items = api.cf.items(list_id)
    assert [(i["ip"], i["comment"]) for i in items] == [
        ("198.51.100.7", "operator: keep"),
        ("192.0.2.1", "new"),
        ("192.0.2.2", "b"),
    ]
    assert items[0] == foreign
    assert items[1]["id"] == before["id"] and items[1]["created_on"] == before["created_on"]


def test_duplicates_in_one_request_are_refused(api: Api) -> None:
    list_id = api.new_list()
    r = api.call(
        "POST", f"{LISTS}/{list_id}/items", json=[{"ip": "2001:db8::/64"}, {"ip": "2001:DB8:0:0::/64"}]
    )
    assert error_of(r)[:2] == (400, 10028)
    assert api.cf.operations == [] and api.cf.items(list_id) == []


def test_cursor_paging(api: Api) -> None:
    list_id = api.new_list()
    api.write(list_id, "POST", [{"ip": f"10.0.{n // 256}.{n % 256}"} for n in range(1203)])
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"per_page": 500}
        if cursor is not None:
            params["cursor"] = cursor
        r = api.call("GET", f"{LISTS}/{list_id}/items", params=params)
        assert r.status_code == 200, r.text
        doc = r.json()
        seen += [i["ip"] for i in doc["result"]]
        pages += 1
        cursor = doc["result_info"]["cursors"].get("after")
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 1203 == len(set(seen))
    # A full last page has no `after` either.
    r = api.call("GET", f"{LISTS}/{list_id}/items", params={"per_page": 500, "search": "10.0.0."})
    assert len(r.json()["result"]) == 256 and "after" not in r.json()["result_info"]["cursors"]
    # per_page above 500 breaks the schema: refused and recorded as a client bug.
    bad = api.call("GET", f"{LISTS}/{list_id}/items", params={"per_page": 501})
    assert bad.status_code == 400
    assert api.cf.violations and "per_page" in api.cf.violations[0]
    api.cf.violations.clear()


def test_default_page_and_search(api: Api) -> None:
    list_id = api.new_list()
    api.write(list_id, "POST", [{"ip": f"192.0.2.{n}"} for n in range(1, 31)] + [{"ip": "198.51.100.1"}])
    first = api.call("GET", f"{LISTS}/{list_id}/items").json()
    assert len(first["result"]) == 25 and "after" in first["result_info"]["cursors"]
    found = api.ok("GET", f"{LISTS}/{list_id}/items", params={"search": "198.51."})
    assert [i["ip"] for i in found] == ["198.51.100.1"]


def test_delete_items_by_id(api: Api) -> None:
    list_id = api.new_list()
    api.write(list_id, "POST", [{"ip": "192.0.2.1"}, {"ip": "192.0.2.2"}, {"ip": "192.0.2.3"}])
    ids = [i["id"] for i in api.cf.items(list_id)]
    op = api.write(list_id, "DELETE", {"items": [{"id": ids[0]}, {"id": ids[2]}]})
    assert api.operation(op)["status"] == "completed"
    assert [i["ip"] for i in api.cf.items(list_id)] == ["192.0.2.2"]


def test_put_replaces_every_item_and_is_in_the_log(api: Api) -> None:
    list_id = api.new_list()
    api.cf.add_item(list_id, "198.51.100.7", "operator")
    api.write(list_id, "PUT", [{"ip": "192.0.2.9", "comment": "only"}])
    assert [(i["ip"], i["comment"]) for i in api.cf.items(list_id)] == [("192.0.2.9", "only")]
    # How a test asserts that the product never replaces the whole list:
    assert [(w.method, w.path) for w in api.cf.writes() if w.method == "PUT"] == [
        ("PUT", f"{LISTS}/{list_id}/items")
    ]


@pytest.mark.parametrize(
    "value",
    [
        "2001:db8::1",  # a single IPv6 address
        "2001:db8::/65",
        "2001:db8::1/128",
        "2000::/8",  # wider than /12
        "10.0.0.0/7",
        "192.0.2.1/24",  # host bits set
        "example.com",
    ],
)
def test_refused_item_values(api: Api, value: str) -> None:
    list_id = api.new_list()
    r = api.call("POST", f"{LISTS}/{list_id}/items", json=[{"ip": "192.0.2.1"}, {"ip": value}])
    status, code, message = error_of(r)
    assert (status, code) == (400, 10035)
    assert message.startswith("invalid value for ip at position 1:")
    assert api.cf.operations == [] and api.cf.items(list_id) == []
    with pytest.raises(ValueError):
        api.cf.add_item(list_id, value)


def test_ipv6_single_address_error_text(api: Api) -> None:
    list_id = api.new_list()
    r = api.call("POST", f"{LISTS}/{list_id}/items", json=[{"ip": "2a06:4880:1:2::5"}])
    assert error_of(r)[2] == (
        "invalid value for ip at position 0: "
        "filters.api.IPv6 CIDRs should have a prefix length from /12 to /64 inclusive"
    )


@pytest.mark.parametrize("value", ["192.0.2.1", "192.0.2.0/24", "10.0.0.0/8", "2001:db8::/64", "2a00::/12"])
def test_accepted_item_values(api: Api, value: str) -> None:
    list_id = api.new_list()
    api.write(list_id, "POST", [{"ip": value}])
    assert [i["ip"] for i in api.cf.items(list_id)] == [value]


def test_comment_up_to_500_characters(api: Api) -> None:
    list_id = api.new_list()
    api.write(list_id, "POST", [{"ip": "192.0.2.1", "comment": "x" * 500}])
    r = api.call("POST", f"{LISTS}/{list_id}/items", json=[{"ip": "192.0.2.2", "comment": "x" * 501}])
    assert error_of(r)[:2] == (400, 10035)


# ------------------------------------------------------------------------------ bulk operations


def test_async_delay_status_progression_and_visibility() -> None:
    with checked_emulator(list_operation_delay=10.0) as cf:
        api = Api(cf)
        list_id = api.new_list()
        op = api.write(list_id, "POST", [{"ip": "192.0.2.1", "comment": "a"}])
        assert api.operation(op) == {"id": op, "status": "pending"}
        assert api.ok("GET", f"{LISTS}/{list_id}/items") == []  # not visible before it completes
        cf.set_clock_offset(6)
        assert api.operation(op)["status"] == "running"
        assert cf.items(list_id) == []
        cf.set_clock_offset(11)
        done = api.operation(op)
        assert done["status"] == "completed" and done["completed"].endswith("Z") and "error" not in done
        assert [i["ip"] for i in api.ok("GET", f"{LISTS}/{list_id}/items")] == ["192.0.2.1"]
        [record] = cf.operations
        assert (record.id, record.method, record.status, len(record.items)) == (op, "POST", "completed", 1)


def test_write_while_an_operation_runs_gets_429() -> None:
    with checked_emulator(list_operation_delay=5.0) as cf:
        api = Api(cf)
        list_id = api.new_list()
        api.write(list_id, "POST", [{"ip": "192.0.2.1"}])
        r = api.call("POST", f"{LISTS}/{list_id}/items", json=[{"ip": "192.0.2.2"}])
        assert error_of(r)[0] == 429
        r = api.call("DELETE", f"{LISTS}/{list_id}/items", json={"items": [{"id": "a" * 32}]})
        assert r.status_code == 429
        assert cf.lists_state.busy_refused == 2 and len(cf.operations) == 1
        # Reads and polls are fine meanwhile; once done, the next write goes through.
        assert api.ok("GET", f"{LISTS}/{list_id}")["num_items"] == 0
        cf.set_clock_offset(6)
        op = api.write(list_id, "POST", [{"ip": "192.0.2.2"}])
        cf.set_clock_offset(12)
        assert api.operation(op)["status"] == "completed"
        assert [i["ip"] for i in cf.items(list_id)] == ["192.0.2.1", "192.0.2.2"]


def test_without_busy_429_operations_queue_one_after_another() -> None:
    with checked_emulator(list_operation_delay=5.0, busy_429=False) as cf:
        api = Api(cf)
        list_id = api.new_list()
        first = api.write(list_id, "POST", [{"ip": "192.0.2.1", "comment": "1"}])
        second = api.write(list_id, "POST", [{"ip": "192.0.2.1", "comment": "2"}])
        cf.set_clock_offset(6)
        assert [api.operation(first)["status"], api.operation(second)["status"]] == ["completed", "pending"]
        cf.set_clock_offset(11)
        assert api.operation(second)["status"] == "completed"
        assert [i["comment"] for i in cf.items(list_id)] == ["2"]


def test_failed_operation_changes_nothing_and_the_next_one_works(api: Api) -> None:
    list_id = api.new_list()
    api.cf.fail_next_operation("Internal error (injected)")
    op = api.write(list_id, "POST", [{"ip": "192.0.2.1"}])
    assert api.operation(op) == {
        "id": op,
        "status": "failed",
        "error": "Internal error (injected)",
        "completed": api.operation(op)["completed"],
    }
    assert api.cf.items(list_id) == []
    again = api.write(list_id, "POST", [{"ip": "192.0.2.1"}])
    assert api.operation(again)["status"] == "completed" and len(api.cf.items(list_id)) == 1


def test_capacity_across_all_lists_fails_the_operation() -> None:
    with checked_emulator(list_capacity_limit=5) as cf:
        api = Api(cf)
        other, mine = api.new_list("other"), api.new_list()
        cf.add_item(other, "198.51.100.1")
        cf.add_item(other, "198.51.100.2")
        ok = api.write(mine, "POST", [{"ip": f"192.0.2.{n}"} for n in (1, 2, 3)])
        assert api.operation(ok)["status"] == "completed"
        # Upserting existing items takes no room: still 5.
        same = api.write(mine, "POST", [{"ip": "192.0.2.1", "comment": "renewed"}])
        assert api.operation(same)["status"] == "completed"
        over = api.write(mine, "POST", [{"ip": "192.0.2.4"}])
        result = api.operation(over)
        assert (result["status"], result["error"]) == ("failed", CAPACITY_ERROR)
        assert len(cf.items(mine)) == 3 and len(cf.items(other)) == 2
        # A delete makes room again.
        first = cf.items(mine)[0]["id"]
        api.write(mine, "DELETE", {"items": [{"id": first}]})
        assert api.operation(api.write(mine, "POST", [{"ip": "192.0.2.4"}]))["status"] == "completed"


def test_writes_and_polls_are_rate_limited_and_logged() -> None:
    with checked_emulator(rate_limit=3) as cf:
        api = Api(cf)
        list_id = api.new_list()
        op = api.write(list_id, "POST", [{"ip": "192.0.2.1"}])
        api.operation(op)
        assert api.call("GET", f"{LISTS}/bulk_operations/{op}").status_code == 429
        assert [r.status for r in cf.requests] == [200, 200, 200, 429]
        assert [w.method for w in cf.writes()] == ["POST", "POST"]


def test_auth_is_required(api: Api) -> None:
    bare = requests.get(api.cf.base_url + LISTS, timeout=10)
    assert error_of(bare)[0] == 400
    bad = requests.get(api.cf.base_url + LISTS, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert error_of(bad)[0] == 403


# ------------------------------------------------------------------------------------- rulesets


def test_entrypoint_404_then_create(api: Api) -> None:
    status, code, message = error_of(api.call("GET", ENTRYPOINT))
    assert (status, code) == (404, 10003)
    assert message == f"could not find entrypoint ruleset in the {PHASE} phase"
    body = {"name": "default", "kind": "zone", "phase": PHASE, "rules": [FAIL2BAN_RULE]}
    created = api.ok("POST", RULESETS, json=body)
    assert (created["kind"], created["phase"], created["version"]) == ("zone", PHASE, "1")
    [rule] = created["rules"]
    assert {k: rule[k] for k in FAIL2BAN_RULE} == FAIL2BAN_RULE and rule["enabled"] is True
    assert api.ok("GET", ENTRYPOINT) == created == api.ok("GET", f"{RULESETS}/{created['id']}")
    # One entry point per zone and phase; the other zone still has none.
    assert error_of(api.call("POST", RULESETS, json=body))[0] == 400
    assert api.call("GET", f"/zones/{ZONE_ID_2}/rulesets/phases/{PHASE}/entrypoint").status_code == 404


def test_append_keeps_the_other_rules_byte_identical(api: Api) -> None:
    seeded = api.cf.seed_entrypoint(ZONE_ID, OPERATOR_RULES)
    before = json.dumps(api.cf.zone_rules(ZONE_ID), sort_keys=True)
    got = api.ok("GET", ENTRYPOINT)
    assert got == seeded
    after = api.ok("POST", f"{RULESETS}/{seeded['id']}/rules", json={**FAIL2BAN_RULE, "ref": "fail2ban"})
    assert after["version"] == "2" and after["id"] == seeded["id"]
    rules = api.cf.zone_rules(ZONE_ID)
    assert json.dumps(rules[:2], sort_keys=True) == before
    assert rules[2]["ref"] == "fail2ban" and rules[2]["expression"] == "(ip.src in $fail2ban)"
    assert after["rules"] == rules
    list_id = api.new_list()
    assert api.ok("GET", f"{LISTS}/{list_id}")["num_referencing_filters"] == 1


def test_rule_position_is_honoured_though_it_cannot_validate(api: Api) -> None:
    seeded = api.cf.seed_entrypoint(ZONE_ID, OPERATOR_RULES)
    api.ok("POST", f"{RULESETS}/{seeded['id']}/rules", json={**FAIL2BAN_RULE, "position": {"index": 1}})
    assert [r["description"] for r in api.cf.zone_rules(ZONE_ID)] == [
        "fail2ban bans",
        "ops: health",
        "ops: XX",
    ]


def test_put_entrypoint_replaces_and_keeps_unchanged_rules(api: Api) -> None:
    seeded = api.cf.seed_entrypoint(ZONE_ID, OPERATOR_RULES)
    keep = {k: seeded["rules"][0][k] for k in ("id", "action", "expression", "description", "enabled", "ref")}
    result = api.ok("PUT", ENTRYPOINT, json={"rules": [keep, FAIL2BAN_RULE]})
    assert result["rules"][0] == seeded["rules"][0]
    assert [r["description"] for r in result["rules"]] == ["ops: health", "fail2ban bans"]
    # PUT on a zone without an entry point creates it.
    other = f"/zones/{ZONE_ID_2}/rulesets/phases/{PHASE}/entrypoint"
    assert api.ok("PUT", other, json={"rules": [FAIL2BAN_RULE]})["kind"] == "zone"
    assert len(api.cf.zone_rules(ZONE_ID_2)) == 1


def test_unknown_ruleset_404_and_action_not_allowed_in_phase(api: Api) -> None:
    assert error_of(api.call("GET", f"{RULESETS}/{'e' * 32}"))[0] == 404
    seeded = api.cf.seed_entrypoint(ZONE_ID, [])
    r = api.call("POST", f"{RULESETS}/{seeded['id']}/rules", json={"action": "route", "expression": "true"})
    assert error_of(r)[0] == 400
    assert api.cf.zone_rules(ZONE_ID) == []


# ------------------------------------------------------------------------------- schema control


@pytest.mark.parametrize(
    ("method", "path", "body", "needle"),
    [
        ("POST", LISTS, {"name": "fail2ban"}, "kind"),
        ("POST", f"{LISTS}/{'a' * 32}/items", {"ip": "192.0.2.1"}, "array"),
        ("DELETE", f"{LISTS}/{'a' * 32}/items", {"items": []}, "items"),
        ("POST", RULESETS, {"name": "default", "phase": PHASE, "rules": []}, "kind"),
        ("POST", f"{RULESETS}/{'b' * 32}/rules", {"action": "blok", "expression": "true"}, "blok"),
        ("GET", f"/zones/Z/rulesets/phases/{PHASE}/entrypoint", None, "zone_id"),
    ],
)
def test_schema_violations_are_detected(method: str, path: str, body: Any, needle: str) -> None:
    with CloudflareEmulator() as cf:
        api = Api(cf)
        r = api.call(method, path, json=body)
        assert error_of(r)[:2] == (400, 9999)
        assert len(cf.violations) == 1 and needle in cf.violations[0], cf.violations


def test_valid_requests_raise_no_violation_with_every_quirk_exempted(api: Api) -> None:
    # managed_challenge (pattern quirk), create and PUT bodies (readOnly quirk), position (oneOf quirk).
    body = {"name": "default", "kind": "zone", "phase": PHASE, "rules": [OPERATOR_RULES[1]]}
    created = api.ok("POST", RULESETS, json=body)
    api.ok("POST", f"{RULESETS}/{created['id']}/rules", json={**FAIL2BAN_RULE, "position": {"after": ""}})
    api.ok("PUT", ENTRYPOINT, json={"rules": [FAIL2BAN_RULE]})
    assert api.cf.violations == []


def test_a_lost_answer_still_queues_the_operation() -> None:
    with checked_emulator() as cf:
        api = Api(cf)
        list_id = api.new_list()
        cf.inject("lost", method="POST", path=r"/items$")
        with pytest.raises(requests.ConnectionError):
            api.call("POST", f"{LISTS}/{list_id}/items", json=[{"ip": "192.0.2.1"}])
        assert [o.status for o in cf.operations] == ["completed"]
        assert [i["ip"] for i in cf.items(list_id)] == ["192.0.2.1"]


def test_position_is_exempt_under_a_fault_too(api: Api) -> None:
    seeded = api.cf.seed_entrypoint(ZONE_ID, OPERATOR_RULES)
    api.cf.inject("503", method="POST", path=r"/rules$")
    r = api.call("POST", f"{RULESETS}/{seeded['id']}/rules", json={**FAIL2BAN_RULE, "position": {"index": 1}})
    assert r.status_code == 503 and api.cf.violations == []
    assert len(api.cf.zone_rules(ZONE_ID)) == 2
