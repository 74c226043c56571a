"""The Cloudflare emulator behaves like the API it stands in for: plain `requests` on loopback."""

from __future__ import annotations

import email.utils
import http.client
import ipaddress
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from tests.support.cf_emulator import (
    ACCOUNT_ID,
    CLOUDFLARE_IPV4,
    CLOUDFLARE_IPV6,
    EMAIL,
    GLOBAL_KEY,
    TOKEN,
    ZONE_ID,
    ZONE_ID_2,
    CloudflareEmulator,
    checked_emulator,
)

ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def session(token: str = TOKEN) -> requests.Session:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    return s


def url(
    cf: CloudflareEmulator, kind: str = "zone", scope_id: str = ZONE_ID, rule_id: str | None = None
) -> str:
    base = f"{cf.base_url}/{'zones' if kind == 'zone' else 'accounts'}/{scope_id}/firewall/access_rules/rules"
    return base if rule_id is None else f"{base}/{rule_id}"


def rule_body(
    value: str, target: str = "ip", notes: str = "Blocked by fail2ban", mode: str = "block"
) -> dict[str, Any]:
    return {"mode": mode, "configuration": {"target": target, "value": value}, "notes": notes}


def error_codes(response: requests.Response) -> list[int]:
    doc = response.json()
    assert doc["success"] is False
    assert doc["result"] is None
    return [e["code"] for e in doc["errors"]]


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def local() -> Iterator[CloudflareEmulator]:
    """An emulator whose violations are inspected by the test itself (the `cf` fixture would fail it)."""
    with CloudflareEmulator() as emulator:
        yield emulator


# ------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize(("kind", "scope_id"), [("zone", ZONE_ID), ("account", ACCOUNT_ID)])
def test_create_list_patch_delete_round_trip(cf: CloudflareEmulator, kind: str, scope_id: str) -> None:
    s = session()
    created = s.post(url(cf, kind, scope_id), json=rule_body("198.51.100.7", notes="Blocked by fail2ban a"))
    assert created.status_code == 200
    rule = created.json()["result"]
    assert re.fullmatch(r"[0-9a-f]{32}", rule["id"])
    assert rule["configuration"] == {"target": "ip", "value": "198.51.100.7"}
    assert (rule["mode"], rule["notes"], rule["paused"]) == ("block", "Blocked by fail2ban a", False)
    assert "block" in rule["allowed_modes"]
    assert ISO_Z.fullmatch(rule["created_on"]) and rule["modified_on"] == rule["created_on"]
    assert ("scope" in rule) == (kind == "account")
    if kind == "account":
        assert rule["scope"] == {"id": ACCOUNT_ID, "type": "account"}

    listed = s.get(url(cf, kind, scope_id))
    assert listed.status_code == 200
    assert listed.json()["result"] == [rule]
    assert cf.rules(kind, scope_id) == [rule]

    cf.set_clock_offset(60)  # so that modified_on must differ from created_on
    patched = s.patch(url(cf, kind, scope_id, rule["id"]), json={"notes": "Blocked by fail2ban b"})
    assert patched.status_code == 200
    after = patched.json()["result"]
    assert after["notes"] == "Blocked by fail2ban b"
    assert after["mode"] == "block"
    assert after["created_on"] == rule["created_on"]
    assert after["modified_on"] > rule["modified_on"]
    assert cf.rules(kind, scope_id)[0]["notes"] == "Blocked by fail2ban b"

    gone = s.delete(url(cf, kind, scope_id, rule["id"]), json={})
    assert gone.status_code == 200
    assert gone.json()["result"] == {"id": rule["id"]}
    assert cf.rules(kind, scope_id) == []
    assert s.get(url(cf, kind, scope_id)).json()["result"] == []

    assert [(w.method, w.status) for w in cf.writes()] == [("POST", 200), ("PATCH", 200), ("DELETE", 200)]
    assert all(r.auth == "token" for r in cf.requests)
    assert cf.requests[0].body == rule_body("198.51.100.7", notes="Blocked by fail2ban a")
    assert (
        cf.requests[0].path
        == f"/{'zones' if kind == 'zone' else 'accounts'}/{scope_id}/firewall/access_rules/rules"
    )


def test_account_post_without_notes_and_patch_mode(cf: CloudflareEmulator) -> None:
    s = session()
    body = {"mode": "challenge", "configuration": {"target": "ip6", "value": "2001:db8::5"}}
    rule = s.post(url(cf, "account", ACCOUNT_ID), json=body).json()["result"]
    assert rule["notes"] == ""
    patched = s.patch(url(cf, "account", ACCOUNT_ID, rule["id"]), json={"mode": "block", "notes": "x"})
    assert patched.json()["result"]["mode"] == "block"


def test_seeded_rules_and_created_on(cf: CloudflareEmulator) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    seeded = cf.add_rule(
        "zone", ZONE_ID, "ip6", "2001:db8::9", mode="challenge", notes="Fail2ban", created_on=when
    )
    assert seeded["created_on"] == "2026-01-02T03:04:05.000000Z"
    assert cf.requests == []  # seeding is not an API call
    assert session().get(url(cf)).json()["result"] == [seeded]
    with pytest.raises(ValueError, match="duplicate"):
        cf.add_rule("zone", ZONE_ID, "ip6", "2001:DB8::9")
    with pytest.raises(ValueError):
        cf.add_rule("zone", ZONE_ID, "ip", "2001:db8::1")
    with pytest.raises(ValueError):
        cf.add_rule("zone", "f" * 32, "ip", "192.0.2.1")


def test_created_on_follows_the_scaled_clock() -> None:
    with CloudflareEmulator(time_scale=3600) as emulator:
        start = emulator.now()
        time.sleep(0.05)  # 180 emulated seconds
        rule = session().post(url(emulator), json=rule_body("192.0.2.1")).json()["result"]
        created = datetime.fromisoformat(rule["created_on"])
        assert created - start >= timedelta(seconds=150)
        emulator.set_clock_offset(86400)
        assert emulator.now() - created >= timedelta(days=1)
        assert emulator.violations == []


def test_keep_alive_serves_several_requests_on_one_connection(cf: CloudflareEmulator) -> None:
    port = int(cf.base_url.split(":")[2].split("/")[0])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        path = f"/client/v4/zones/{ZONE_ID}/firewall/access_rules/rules"
        conn.request("POST", path, body=json.dumps(rule_body("192.0.2.10")), headers=headers)
        first = conn.getresponse()
        assert first.status == 200 and first.getheader("Content-Length")
        first.read()
        sock = conn.sock
        conn.request("GET", path, headers=headers)
        second = conn.getresponse()
        assert second.status == 200
        assert len(json.loads(second.read())["result"]) == 1
        assert conn.sock is sock  # the same TCP connection answered both
    finally:
        conn.close()


# ------------------------------------------------------------------------------------ Cloudflare rules


def test_duplicates_are_refused_with_10009(cf: CloudflareEmulator) -> None:
    s = session()
    assert s.post(url(cf), json=rule_body("198.51.100.1")).status_code == 200
    again = s.post(url(cf), json=rule_body("198.51.100.1", notes="someone else"))
    assert again.status_code == 400
    assert error_codes(again) == [10009]

    assert s.post(url(cf), json=rule_body("2001:DB8::1", target="ip6")).status_code == 200
    for variant in ("2001:db8::1", "2001:0db8:0000::0001", "2001:Db8:0:0:0:0:0:1"):
        dup = s.post(url(cf), json=rule_body(variant, target="ip6"))
        assert dup.status_code == 400, variant
        assert error_codes(dup) == [10009]
    # The same value in another zone is another rule.
    assert s.post(url(cf, "zone", ZONE_ID_2), json=rule_body("198.51.100.1")).status_code == 200
    assert len(cf.rules()) == 2
    assert len(cf.rules("zone", ZONE_ID_2)) == 1


@pytest.mark.parametrize(
    ("target", "value"),
    [
        ("ip", "2001:db8::1"),
        ("ip", "300.1.2.3"),
        ("ip", "198.51.100.0/24"),
        ("ip6", "198.51.100.1"),
        ("ip6", "nope"),
    ],
)
def test_invalid_values_are_refused(cf: CloudflareEmulator, target: str, value: str) -> None:
    answer = session().post(url(cf), json=rule_body(value, target=target))
    assert answer.status_code == 400
    assert error_codes(answer) == [10014]
    assert cf.rules() == []


def test_unknown_rule_scope_and_route_are_404(cf: CloudflareEmulator) -> None:
    s = session()
    missing = "0" * 32
    for answer in (
        s.patch(url(cf, rule_id=missing), json={"notes": "x"}),
        s.delete(url(cf, rule_id=missing), json={}),
    ):
        assert answer.status_code == 404
        assert error_codes(answer) == [10001]
    unknown_zone = s.get(url(cf, "zone", "f" * 32))
    assert unknown_zone.status_code == 404
    assert error_codes(unknown_zone) == [7003]
    for answer in (
        s.get(f"{cf.base_url}/zones/{ZONE_ID}/dns_records"),
        s.get(url(cf, rule_id=missing)),  # GET of one rule is not in the schema subset
        s.put(url(cf, rule_id=missing), json={}),
        s.get(cf.base_url.replace("/client/v4", "/elsewhere")),
    ):
        assert answer.status_code == 404
        assert error_codes(answer) == [7003]
        assert answer.json()["errors"][0]["message"] == "No route for that URI"


def test_paging_in_creation_order(cf: CloudflareEmulator) -> None:
    s = session()
    ids = [s.post(url(cf), json=rule_body(f"198.51.100.{i}")).json()["result"]["id"] for i in range(1, 13)]

    def page(n: int, per_page: int) -> dict[str, Any]:
        answer = s.get(url(cf), params={"page": n, "per_page": per_page})
        assert answer.status_code == 200
        doc: dict[str, Any] = answer.json()
        return doc

    ones = [page(n, 1) for n in range(1, 14)]
    assert [r["id"] for p in ones for r in p["result"]] == ids
    assert ones[-1]["result"] == []
    assert ones[0]["result_info"] == {
        "page": 1,
        "per_page": 1,
        "count": 1,
        "total_count": 12,
        "total_pages": 12,
    }

    fives = [page(n, 5) for n in (1, 2, 3)]
    assert [len(p["result"]) for p in fives] == [5, 5, 2]
    assert [r["id"] for p in fives for r in p["result"]] == ids
    assert fives[2]["result_info"] == {
        "page": 3,
        "per_page": 5,
        "count": 2,
        "total_count": 12,
        "total_pages": 3,
    }

    default = s.get(url(cf)).json()
    assert default["result_info"]["per_page"] == 20
    assert len(default["result"]) == 12


@pytest.mark.parametrize("params", [{"per_page": 7}, {"per_page": 0}, {"per_page": 1005}, {"page": 0}])
def test_bad_paging_is_400(cf: CloudflareEmulator, params: dict[str, int]) -> None:
    answer = session().get(url(cf), params=params)
    assert answer.status_code == 400
    assert error_codes(answer) == [10014]


def test_max_per_page_is_configurable() -> None:
    with CloudflareEmulator(max_per_page=50) as emulator:
        assert session().get(url(emulator), params={"per_page": 50}).status_code == 200
        assert session().get(url(emulator), params={"per_page": 55}).status_code == 400


def test_clamp_per_page_serves_and_reports_the_smaller_page() -> None:
    with checked_emulator(clamp_per_page=50) as emulator:
        for i in range(120):
            emulator.add_rule("zone", ZONE_ID, "ip", f"45.155.{i // 200}.{i % 200 + 1}")
        s = session()
        pages = [s.get(url(emulator), params={"page": n, "per_page": 1000}).json() for n in (1, 2, 3)]
        assert [len(p["result"]) for p in pages] == [50, 50, 20]
        assert [p["result_info"]["per_page"] for p in pages] == [50, 50, 50]
        assert [p["result_info"]["total_pages"] for p in pages] == [3, 3, 3]
        assert pages[2]["result_info"] == {
            "page": 3,
            "per_page": 50,
            "count": 20,
            "total_count": 120,
            "total_pages": 3,
        }
        assert len({r["id"] for p in pages for r in p["result"]}) == 120
        # Below the clamp nothing changes.
        small = s.get(url(emulator), params={"per_page": 5}).json()
        assert len(small["result"]) == 5 and small["result_info"]["per_page"] == 5


def test_ignore_page_answers_every_page_with_the_first() -> None:
    with checked_emulator(ignore_page=True) as emulator:
        for i in range(12):
            emulator.add_rule("zone", ZONE_ID, "ip", f"45.155.0.{i + 1}")
        s = session()
        pages = [s.get(url(emulator), params={"page": n, "per_page": 5}).json() for n in (1, 2, 3)]
        assert [[r["id"] for r in p["result"]] for p in pages] == [[r["id"] for r in pages[0]["result"]]] * 3
        assert [p["result_info"]["page"] for p in pages] == [1, 1, 1]
        assert pages[0]["result_info"]["total_pages"] == 3


def test_filters(cf: CloudflareEmulator) -> None:
    a = cf.add_rule("zone", ZONE_ID, "ip", "198.51.100.1", notes="Blocked by fail2ban jail=sshd")
    b = cf.add_rule("zone", ZONE_ID, "ip6", "2001:db8::1", notes="Fail2Ban sshd", mode="challenge")
    c = cf.add_rule("zone", ZONE_ID, "ip", "198.51.100.2", notes="hand-made: BLOCKED BY FAIL2BAN, keep")
    cf.add_rule("zone", ZONE_ID, "ip", "198.51.100.3", notes="office")
    s = session()

    def ids(**params: str) -> list[str]:
        answer = s.get(url(cf), params=params)
        assert answer.status_code == 200
        return [r["id"] for r in answer.json()["result"]]

    assert ids(notes="blocked by FAIL2ban") == [a["id"], c["id"]]
    assert ids(notes="fail2ban") == [a["id"], b["id"], c["id"]]
    assert ids(mode="challenge") == [b["id"]]
    assert ids(**{"configuration.target": "ip", "configuration.value": "198.51.100.2"}) == [c["id"]]
    assert ids(**{"configuration.value": "2001:DB8:0::1"}) == [b["id"]]
    assert ids(notes="sshd", mode="challenge") == [b["id"]]
    assert ids(notes="sshd", mode="challenge", match="any") == [a["id"], b["id"]]
    assert ids(order="configuration.value", direction="desc")[0] == b["id"]


# ------------------------------------------------------------------------------------------------ auth


def test_auth_failures_change_nothing(cf: CloudflareEmulator) -> None:
    body = rule_body("198.51.100.9")
    bare = requests.post(url(cf), json=body)
    assert bare.status_code == 400
    assert error_codes(bare) == [6003]

    wrong_token = session("cf-test-token-WRONG").post(url(cf), json=body)
    assert wrong_token.status_code == 403
    assert error_codes(wrong_token) == [10000]

    wrong_key = requests.post(url(cf), json=body, headers={"X-Auth-Email": EMAIL, "X-Auth-Key": "nope"})
    assert wrong_key.status_code == 403
    assert error_codes(wrong_key) == [10000]

    half_key = requests.post(url(cf), json=body, headers={"X-Auth-Key": GLOBAL_KEY})
    assert half_key.status_code == 400
    assert error_codes(half_key) == [6003]

    assert cf.rules() == []
    assert [r.auth for r in cf.requests] == ["none", "bad", "bad", "bad"]

    good_key = requests.post(url(cf), json=body, headers={"X-Auth-Email": EMAIL, "X-Auth-Key": GLOBAL_KEY})
    assert good_key.status_code == 200
    assert cf.requests[-1].auth == "key"
    assert len(cf.rules()) == 1
    # The log never holds a secret.
    assert TOKEN not in repr(cf.requests) and GLOBAL_KEY not in repr(cf.requests)


# ---------------------------------------------------------------------------------------------- schema


def test_schema_violations_are_recorded_and_refused(local: CloudflareEmulator) -> None:
    s = session()
    bad_mode = s.post(url(local), json=rule_body("198.51.100.1", mode="nope"))
    assert bad_mode.status_code == 400
    assert error_codes(bad_mode) == [9999]
    no_config = s.post(url(local), json={"mode": "block", "notes": "x"})
    assert no_config.status_code == 400
    zone_without_notes = s.post(
        url(local), json={"mode": "block", "configuration": {"target": "ip", "value": "1.1.1.1"}}
    )
    assert zone_without_notes.status_code == 400
    rule = local.add_rule("zone", ZONE_ID, "ip", "198.51.100.2")
    bare_delete = s.delete(url(local, rule_id=rule["id"]))
    assert bare_delete.status_code == 400
    # The schema's configuration.target filter enum has no ip6 (a quirk kept from the source).
    assert s.get(url(local), params={"configuration.target": "ip6"}).status_code == 400
    assert s.get(url(local), params={"per_page": "many"}).status_code == 400
    assert (
        s.post(url(local), data=b"not json", headers={"Content-Type": "application/json"}).status_code == 400
    )

    assert local.rules() == [rule]
    v = local.violations
    assert len(v) == 7, v
    path = f"/zones/{ZONE_ID}/firewall/access_rules/rules"
    assert v[0].startswith(f"POST {path}: ") and "'nope' is not one of" in v[0]
    assert "'configuration' is a required property" in v[1]
    assert "'notes' is a required property" in v[2]
    assert v[3] == f"DELETE {path}/{rule['id']}: DELETE without a JSON body"
    assert v[4].startswith(f"GET {path}: ") and "configuration.target" in v[4]
    assert "per_page" in v[5]
    assert v[6].startswith(f"POST {path}: ")
    assert [r.status for r in local.requests] == [400] * 7


def test_delete_bodies_the_schema_accepts(cf: CloudflareEmulator) -> None:
    s = session()
    for kind, scope_id, body in (
        ("zone", ZONE_ID, {}),
        ("zone", ZONE_ID, {"cascade": "none"}),
        ("account", ACCOUNT_ID, {}),
    ):
        rule = cf.add_rule(kind, scope_id, "ip", "198.51.100.1" if body == {} else "198.51.100.2")
        assert s.delete(url(cf, kind, scope_id, rule["id"]), json=body).status_code == 200


def test_own_responses_are_validated(local: CloudflareEmulator) -> None:
    local.add_rule("zone", ZONE_ID, "ip", "198.51.100.1", created_on="yesterday")
    assert session().get(url(local)).status_code == 200
    assert len(local.violations) == 1
    assert "response 200" in local.violations[0] and "'yesterday' is not a 'date-time'" in local.violations[0]


def test_response_validation_can_be_turned_off_for_benchmarks() -> None:
    with CloudflareEmulator(validate_responses=False) as emulator:
        emulator.add_rule("zone", ZONE_ID, "ip", "198.51.100.1", created_on="yesterday")
        assert session().get(url(emulator)).status_code == 200
        assert (
            session().post(url(emulator), json={"mode": "nope"}).status_code == 400
        )  # requests still checked
        assert len(emulator.violations) == 1 and "'nope'" in emulator.violations[0]


def test_violations_fail_the_checked_emulator() -> None:
    with (
        pytest.raises(
            pytest.fail.Exception, match=r"(?s)schema violations.*POST /zones/.*'nope' is not one of"
        ),
        checked_emulator() as emulator,
    ):
        session().post(url(emulator), json=rule_body("198.51.100.1", mode="nope"))
    with checked_emulator(rate_limit=5) as emulator:  # a clean run passes
        assert emulator.rate_limit == 5
        assert session().get(url(emulator)).status_code == 200


# ------------------------------------------------------------------- token verify, /ips, Date header


def test_token_verify_active_by_default(cf: CloudflareEmulator) -> None:
    answer = session().get(f"{cf.base_url}/user/tokens/verify")
    assert answer.status_code == 200
    doc = answer.json()
    assert doc["success"] is True and doc["errors"] == []
    assert doc["result"] == {"id": cf.token_id, "status": "active"}
    assert doc["messages"][0]["message"] == "This API Token is valid and active"
    assert [(r.method, r.path, r.auth) for r in cf.requests] == [("GET", "/user/tokens/verify", "token")]


@pytest.mark.parametrize("status", ["disabled", "expired"])
def test_token_verify_reports_status_and_dates_and_the_token_stops_working(status: str) -> None:
    ends = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)
    starts = datetime(2026, 1, 1, tzinfo=UTC)
    with checked_emulator(token_status=status, token_expires_on=ends, token_not_before=starts) as emulator:
        doc = session().get(f"{emulator.base_url}/user/tokens/verify").json()
        assert doc["result"]["status"] == status
        assert doc["result"]["expires_on"] == "2026-10-01T12:00:00Z"
        assert doc["result"]["not_before"] == "2026-01-01T00:00:00Z"
        refused = session().get(url(emulator))
        assert refused.status_code == 403 and error_codes(refused) == [10000]


def test_token_verify_refuses_a_wrong_token_and_the_global_key(cf: CloudflareEmulator) -> None:
    wrong = session("cf-wrong-token-1234").get(f"{cf.base_url}/user/tokens/verify")
    assert wrong.status_code == 401 and error_codes(wrong) == [1000]
    key = requests.get(
        f"{cf.base_url}/user/tokens/verify", headers={"X-Auth-Email": EMAIL, "X-Auth-Key": GLOBAL_KEY}
    )
    assert key.status_code == 400 and error_codes(key) == [6003]
    assert requests.get(f"{cf.base_url}/user/tokens/verify").status_code == 400
    with pytest.raises(ValueError):
        CloudflareEmulator(token_status="revoked")


def test_ips_are_public_and_configurable(cf: CloudflareEmulator) -> None:
    answer = requests.get(f"{cf.base_url}/ips")  # no credentials: the endpoint is public
    assert answer.status_code == 200
    result = answer.json()["result"]
    assert result["ipv4_cidrs"] == list(CLOUDFLARE_IPV4) and result["ipv6_cidrs"] == list(CLOUDFLARE_IPV6)
    assert len(CLOUDFLARE_IPV4) == 15 and len(CLOUDFLARE_IPV6) == 7
    assert all(ipaddress.ip_network(n).version == 4 for n in CLOUDFLARE_IPV4)
    assert all(ipaddress.ip_network(n).version == 6 for n in CLOUDFLARE_IPV6)
    assert re.fullmatch(r"[0-9a-f]{32}", result["etag"])
    assert "jdcloud_cidrs" not in result
    assert (
        "jdcloud_cidrs" in requests.get(f"{cf.base_url}/ips", params={"networks": "jdcloud"}).json()["result"]
    )
    assert [r.auth for r in cf.requests] == ["none", "none"]
    with checked_emulator(cloudflare_ipv4=["198.41.128.0/17"], cloudflare_ipv6=[]) as other:
        assert requests.get(f"{other.base_url}/ips").json()["result"]["ipv4_cidrs"] == ["198.41.128.0/17"]


def test_ips_answers_are_checked_against_the_schema(local: CloudflareEmulator) -> None:
    local.cloudflare_ipv4 = (5,)  # type: ignore[assignment]  # not a string: the schema says array of strings
    requests.get(f"{local.base_url}/ips")
    assert any("/ips" in v and "response 200" in v for v in local.violations), local.violations


def test_date_header_follows_the_emulator_clock_and_offset() -> None:
    with checked_emulator(date_offset=-300) as emulator:
        for answer in (session().get(url(emulator)), requests.get(f"{emulator.base_url}/ips")):
            sent = email.utils.parsedate_to_datetime(answer.headers["Date"])
            assert abs((sent - (datetime.now(UTC) - timedelta(seconds=300))).total_seconds()) < 3
        emulator.date_offset = 90
        sent = email.utils.parsedate_to_datetime(session().get(url(emulator)).headers["Date"])
        assert abs((sent - (datetime.now(UTC) + timedelta(seconds=90))).total_seconds()) < 3


# ---------------------------------------------------------------------------------------------- faults


@pytest.mark.parametrize("kind", ["500", "502", "503"])
def test_fault_html_error_page(cf: CloudflareEmulator, kind: str) -> None:
    cf.inject(kind, method="GET")
    answer = session().get(url(cf))
    assert answer.status_code == int(kind)
    assert answer.headers["Content-Type"].startswith("text/html")
    assert "<html>" in answer.text
    with pytest.raises(ValueError):
        answer.json()
    assert session().get(url(cf)).status_code == 200  # count=1: only the next request
    assert [r.status for r in cf.requests] == [int(kind), 200]


def test_fault_bodies(cf: CloudflareEmulator) -> None:
    s = session()
    cf.inject("success_false")
    answer = s.get(url(cf))
    assert answer.status_code == 200 and answer.json()["success"] is False and answer.json()["errors"]

    cf.inject("malformed_json")
    answer = s.get(url(cf))
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
    with pytest.raises(ValueError):
        answer.json()

    cf.inject("missing_result")
    answer = s.get(url(cf))
    assert answer.status_code == 200 and answer.json()["success"] is True and "result" not in answer.json()

    cf.inject("400", method="POST")
    answer = s.post(url(cf), json=rule_body("198.51.100.1"))
    assert answer.status_code == 400 and error_codes(answer) == [10014]
    assert cf.rules() == []  # the faulted create did not happen


def test_fault_reset_is_a_connection_error(cf: CloudflareEmulator) -> None:
    s = session()
    assert s.get(url(cf)).status_code == 200  # a pooled keep-alive connection exists
    cf.inject("reset", method="POST", count=2)
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            s.post(url(cf), json=rule_body("198.51.100.1"), timeout=30)  # a hang must not pass as a reset
    assert s.post(url(cf), json=rule_body("198.51.100.1"), timeout=30).status_code == 200
    assert [r.status for r in cf.writes()] == [0, 0, 200]


def test_fault_lost_carries_out_the_request_then_resets(cf: CloudflareEmulator) -> None:
    cf.inject("lost", method="POST")
    with pytest.raises(requests.ConnectionError):
        session().post(url(cf), json=rule_body("198.51.100.1"), timeout=30)
    assert [r["configuration"]["value"] for r in cf.rules()] == ["198.51.100.1"]  # stored all the same
    again = session().post(url(cf), json=rule_body("198.51.100.1"), timeout=30)
    assert again.status_code == 400 and error_codes(again) == [10009]
    assert [r.status for r in cf.writes()] == [0, 400]


def test_fault_late_carries_out_the_request_at_once_and_answers_late(cf: CloudflareEmulator) -> None:
    cf.inject("late", method="POST", delay=0.6)
    with pytest.raises(requests.Timeout):
        session().post(url(cf), json=rule_body("198.51.100.1"), timeout=0.2)
    assert len(cf.rules()) == 1  # stored before the client gave up
    assert error_codes(session().post(url(cf), json=rule_body("198.51.100.1"), timeout=30)) == [10009]


def test_fault_matching_by_method_and_path(cf: CloudflareEmulator) -> None:
    s = session()
    cf.inject("503", method="DELETE", path=r"/accounts/")
    rule = cf.add_rule("zone", ZONE_ID, "ip", "198.51.100.1")
    assert s.get(url(cf, "account", ACCOUNT_ID)).status_code == 200
    assert s.delete(url(cf, rule_id=rule["id"]), json={}).status_code == 200
    account_rule = cf.add_rule("account", ACCOUNT_ID, "ip", "198.51.100.1")
    assert s.delete(url(cf, "account", ACCOUNT_ID, account_rule["id"]), json={}).status_code == 503
    assert s.delete(url(cf, "account", ACCOUNT_ID, account_rule["id"]), json={}).status_code == 200
    with pytest.raises(ValueError):
        cf.inject("teapot")


def test_fault_delay_times_out_without_blocking_others(cf: CloudflareEmulator) -> None:
    cf.inject("delay", method="POST", delay=0.6)
    outcome: list[BaseException] = []

    def slow_post() -> None:
        try:
            session().post(url(cf), json=rule_body("198.51.100.1"), timeout=0.2)
        except requests.Timeout as exc:
            outcome.append(exc)

    worker = threading.Thread(target=slow_post)
    worker.start()
    wait_for(lambda: cf.requests == [] and not cf._faults)  # the POST has taken the fault
    assert session().get(url(cf), timeout=2).status_code == 200
    assert [r.method for r in cf.requests] == ["GET"]  # answered while the POST was still sleeping
    worker.join()
    assert len(outcome) == 1 and isinstance(outcome[0], requests.Timeout)
    # After the delay the request is answered normally: the rule exists although the client gave up.
    wait_for(lambda: any(r.method == "POST" for r in cf.requests))
    assert cf.writes()[0].status == 200
    assert len(cf.rules()) == 1


# ---------------------------------------------------------------------------------------- rate limiter


class SetClock:
    """Seconds that move only when the test moves them."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_per_scaled_window() -> None:
    # rate_window 300 emulated s at time_scale 300: each window lasts one second of the emulator's clock,
    # here one the test sets (22 requests once spread over two real-time windows on a loaded machine).
    clock = SetClock()
    with CloudflareEmulator(rate_limit=20, rate_window=300.0, time_scale=300.0, clock=clock) as emulator:
        s = session()
        clock.now = 0.5  # mid-window
        answers = [s.get(url(emulator)) for _ in range(22)]
        assert emulator.window_remaining() == 150  # all 22 fell in one window
        assert [a.status_code for a in answers] == [200] * 20 + [429, 429]
        limited = answers[20]
        assert error_codes(limited) == [971]
        assert int(limited.headers["Retry-After"]) == 150
        assert emulator.rate_limited == 2
        assert [r.status for r in emulator.requests][-2:] == [429, 429]
        # Writes are refused too, and change nothing.
        assert s.post(url(emulator), json=rule_body("198.51.100.1")).status_code == 429
        assert emulator.rules() == []

        clock.now = 1.01  # the next window: 303 emulated s
        assert s.get(url(emulator)).status_code == 200
        assert s.post(url(emulator), json=rule_body("198.51.100.1")).status_code == 200
        assert emulator.violations == []


def test_clock_offset_ends_the_window() -> None:
    with CloudflareEmulator(rate_limit=1, rate_window=300.0) as emulator:
        s = session()
        assert s.get(url(emulator)).status_code == 200
        assert s.get(url(emulator)).status_code == 429
        emulator.set_clock_offset(emulator.window_remaining() + 1)
        assert s.get(url(emulator)).status_code == 200


def test_stop_closes_the_port() -> None:
    emulator = CloudflareEmulator().start()
    base = emulator.base_url
    emulator.stop()
    emulator.stop()  # idempotent
    with pytest.raises(requests.ConnectionError):
        requests.get(base, timeout=2)
