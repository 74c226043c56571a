"""reconcile/cloudflare/ (the transport and the rules client): the HTTP client, against the local
Cloudflare emulator (and a few pure checks).

Backoff sleeps go to a list instead of the clock, so the retry tests do not wait.
"""

from __future__ import annotations

import email.utils
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from reconcile import __version__
from reconcile.cloudflare.answers import retry_after
from reconcile.cloudflare.credentials import Credentials
from reconcile.cloudflare.pacing import Pacer
from reconcile.cloudflare.rules import Client, IncompleteListing, _parse_rule
from reconcile.core.model import Rule, Scope, ScopeKind
from reconcile.errors import CloudflareError, ConfigError
from tests.support.cf_emulator import (
    EMAIL,
    GLOBAL_KEY,
    TOKEN,
    ZONE_ID,
)

TAG = "Blocked by fail2ban"
ZONE = Scope(ScopeKind.ZONE, ZONE_ID)


# --- pure parts -----------------------------------------------------------------------------------------


def test_credentials_never_show_secrets() -> None:
    token = Credentials(token=TOKEN)
    legacy = Credentials(email=EMAIL, key=GLOBAL_KEY)
    for creds, secret in ((token, TOKEN), (legacy, GLOBAL_KEY)):
        for text in (repr(creds), str(creds), f"{creds}", f"{creds!r}", repr([creds]), repr({"c": creds})):
            assert secret not in text
            assert "***" in text
    assert repr(token) == "Credentials(token=***)"
    assert token.headers() == {"Authorization": f"Bearer {TOKEN}"}
    assert legacy.headers() == {"X-Auth-Email": EMAIL, "X-Auth-Key": GLOBAL_KEY}


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"token": ""},
        {"token": "abc def"},
        {"token": TOKEN + "\n"},
        {"token": TOKEN, "email": EMAIL, "key": GLOBAL_KEY},
        {"email": EMAIL},
        {"key": GLOBAL_KEY},
        {"email": EMAIL, "key": "k\r\nX-Injected: 1"},
    ],
)
def test_credentials_refuse_missing_or_unsendable_values(kwargs: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        Credentials(**kwargs)
    for secret in (TOKEN, GLOBAL_KEY, "X-Injected"):
        assert secret not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://api.cloudflare.com/client/v4",
        "http://example.com:8080/client/v4",
        "http://10.0.0.1/client/v4",
        "http://192.0.2.1/client/v4",
        "http://[2001:db8::1]/client/v4",
        "http://localhost.example.com/client/v4",
        "ftp://127.0.0.1/client/v4",
        "127.0.0.1:8080/client/v4",
        "https:///client/v4",
        "https://user:pw@api.cloudflare.com/client/v4",
    ],
)
def test_base_url_must_be_https_unless_loopback(url: str) -> None:
    with pytest.raises(ConfigError, match=r"\[cloudflare\] api_base_url"):
        Client(url, Credentials(token=TOKEN), pacer=Pacer(60, 1, 1))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.cloudflare.com/client/v4", "https://api.cloudflare.com/client/v4"),
        ("https://api.cloudflare.com/client/v4/", "https://api.cloudflare.com/client/v4"),
        ("http://127.0.0.1:8080/client/v4", "http://127.0.0.1:8080/client/v4"),
        ("http://127.3.2.1/client/v4", "http://127.3.2.1/client/v4"),
        ("http://[::1]:9000/client/v4/", "http://[::1]:9000/client/v4"),
        ("http://localhost:9000/client/v4", "http://localhost:9000/client/v4"),
    ],
)
def test_base_url_accepted(url: str, expected: str) -> None:
    client = Client(url, Credentials(token=TOKEN), pacer=Pacer(60, 1, 1))
    assert client.base_url == expected
    assert TOKEN not in repr(client)


@pytest.mark.parametrize("per_page", [0, 2, 7, 1005, -5])
def test_per_page_must_be_one_or_a_multiple_of_five(per_page: int) -> None:
    with pytest.raises(ValueError):
        Client(
            "https://api.cloudflare.com/client/v4",
            Credentials(token=TOKEN),
            pacer=Pacer(60, 1, 1),
            per_page=per_page,
        )


def test_retry_after_parsing() -> None:
    assert retry_after(None) is None
    assert retry_after("120") == 120.0
    assert retry_after(" 1.5 ") == 1.5
    assert retry_after("-3") == 0.0
    assert retry_after("soon") is None
    assert retry_after("nan") is None
    later = datetime.now(UTC) + timedelta(seconds=90)
    seconds = retry_after(email.utils.format_datetime(later, usegmt=True))
    assert seconds is not None and 80 <= seconds <= 91


def test_parse_rule_fills_defaults_and_parses_times() -> None:
    item = {
        "id": "92f17202ed8bd63d69a66b86a49a8f6b",
        "mode": "block",
        "configuration": {"target": "ip6", "value": "2001:db8::1"},
        "created_on": "2014-01-01T05:20:00.12345Z",
        "modified_on": "2014-01-01T05:20:00",
        "allowed_modes": ["block"],
    }
    rule = _parse_rule(item, ZONE, "GET", "/x")
    assert rule == Rule(
        id="92f17202ed8bd63d69a66b86a49a8f6b",
        scope=ZONE,
        target="ip6",
        value="2001:db8::1",
        mode="block",
        notes="",
        created_on=datetime(2014, 1, 1, 5, 20, 0, 123450, tzinfo=UTC),
        modified_on=datetime(2014, 1, 1, 5, 20, 0, tzinfo=UTC),
    )
    broken_items: list[object] = [
        [],
        {**item, "id": None},
        {**item, "configuration": "ip"},
        {**item, "created_on": "yesterday"},
        {**item, "notes": 5},
    ]
    for broken in broken_items:
        with pytest.raises(CloudflareError, match="unexpected rule"):
            _parse_rule(broken, ZONE, "GET", "/x")


class ScriptedSession(requests.Session):
    """Answers from a script instead of the network; records what the client asks of it.

    Set to skip TLS checks, as a careless caller might hand it in: the client must override that.
    """

    def __init__(self, *bodies: Any) -> None:
        super().__init__()
        self.verify = False
        self.bodies = list(bodies)
        self.calls: list[dict[str, Any]] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        self.calls.append({"method": method, "url": url, **kwargs})
        response = requests.Response()
        response.status_code = 200
        response._content = json.dumps(self.bodies.pop(0)).encode()
        return response


def ok(result: Any) -> dict[str, Any]:
    return {"success": True, "errors": [], "messages": [], "result": result}


def api_rule(n: int) -> dict[str, Any]:
    return {"id": f"{n:032x}", "mode": "block", "configuration": {"target": "ip", "value": f"192.0.2.{n}"}}


def scripted_client(session: requests.Session, **kwargs: Any) -> Client:
    return Client(
        "https://api.cloudflare.com/client/v4",
        Credentials(token=TOKEN),
        pacer=Pacer(1_000_000, 10, 10),
        session=session,
        **kwargs,
    )


def test_every_request_verifies_tls_has_a_timeout_and_a_user_agent() -> None:
    session = ScriptedSession(ok([]))
    client = scripted_client(session, timeout=7.5)
    assert client.list_rules(ZONE, TAG) == []
    (call,) = session.calls
    assert call["verify"] is True
    assert call["timeout"] == 7.5
    assert call["allow_redirects"] is False
    assert call["headers"]["User-Agent"] == f"reconcile/{__version__}"
    assert call["url"] == (
        f"https://api.cloudflare.com/client/v4/zones/{ZONE_ID}/firewall/access_rules/rules"
        "?notes=Blocked%20by%20fail2ban&page=1&per_page=1000"
    )


def test_list_keeps_the_first_copy_of_a_rule_that_shows_up_on_two_pages() -> None:
    session = ScriptedSession(
        ok([api_rule(1), api_rule(2), api_rule(3), api_rule(4), api_rule(5)]), ok([api_rule(5), api_rule(6)])
    )
    rules = scripted_client(session, per_page=5).list_rules(ZONE, TAG)
    assert [r.id for r in rules] == [f"{n:032x}" for n in range(1, 7)]
    assert len(session.calls) == 2


def test_list_result_that_is_not_a_list_is_an_incomplete_listing() -> None:
    session = ScriptedSession(ok({"id": "x"}))
    with pytest.raises(IncompleteListing, match="not a list of rules"):
        scripted_client(session).list_rules(ZONE, TAG)


# --- against the emulator: reading ---------------------------------------------------------------------


def test_list_without_total_pages_asks_for_one_more_after_a_full_page() -> None:
    session = ScriptedSession(ok([api_rule(n) for n in range(1, 6)]), ok([]))
    assert len(scripted_client(session, per_page=5).list_rules(ZONE, TAG)) == 5
    assert len(session.calls) == 2


def test_list_trusts_the_reported_page_size_without_total_pages() -> None:
    def page(*ns: int) -> dict[str, Any]:
        return {**ok([api_rule(n) for n in ns]), "result_info": {"page": 1, "per_page": 5, "count": len(ns)}}

    session = ScriptedSession(page(1, 2, 3, 4, 5), page(6, 7, 8, 9, 10), page(11, 12))
    rules = scripted_client(session, per_page=1000).list_rules(ZONE)
    assert [r.id for r in rules] == [f"{n:032x}" for n in range(1, 13)]
    assert len(session.calls) == 3


def test_list_ignoring_page_without_total_pages_ends_incomplete_too() -> None:
    full = ok([api_rule(n) for n in range(1, 6)])
    session = ScriptedSession(full, full, full, full)
    client = Client(
        "https://api.cloudflare.com/client/v4",
        Credentials(token=TOKEN),
        pacer=Pacer(1_000_000, 4, 10),
        session=session,
        per_page=5,
    )
    with pytest.raises(IncompleteListing, match="page 2 is full but brings no rule not seen before"):
        client.list_rules(ZONE)
    assert len(session.calls) == 2


# --- against the emulator: writing ---------------------------------------------------------------------


# --- for the operator's tools: find_rules, verify_token, cloudflare_ips, last_date ----------------------


def test_verify_token_bad_answer_names_the_request() -> None:
    session = ScriptedSession(ok({"id": "x", "status": "active", "expires_on": "soon"}), ok({"id": "x"}))
    client = scripted_client(session)
    with pytest.raises(CloudflareError, match=r"^GET /user/tokens/verify: .*expires_on 'soon'"):
        client.verify_token()
    with pytest.raises(CloudflareError, match=r"^GET /user/tokens/verify: .*no status"):
        client.verify_token()


@pytest.mark.parametrize(
    ("result", "words"),
    [
        ({"ipv4_cidrs": ["104.16.0.0/13"]}, "`ipv6_cidrs` is not a non-empty list"),
        ({"ipv4_cidrs": ["2606:4700::/32"], "ipv6_cidrs": ["2606:4700::/32"]}, "not an IPv4 network"),
        ({"ipv4_cidrs": ["104.16.0.0/33"], "ipv6_cidrs": ["2606:4700::/32"]}, "not an IPv4 network"),
        ({"ipv4_cidrs": [5], "ipv6_cidrs": ["2606:4700::/32"]}, "not an IPv4 network"),
        ("104.16.0.0/13", "not an object"),
    ],
)
def test_cloudflare_ips_bad_answers_name_the_request(result: Any, words: str) -> None:
    session = ScriptedSession(ok(result))
    with pytest.raises(CloudflareError, match=r"^GET /ips: ") as info:
        scripted_client(session).cloudflare_ips()
    assert words in str(info.value)
    assert "Authorization" not in session.calls[0]["headers"]


# --- faults and retries ---------------------------------------------------------------------------------


# --- limits ---------------------------------------------------------------------------------------------


# --- logging --------------------------------------------------------------------------------------------


def test_a_request_never_waits_past_the_runs_time_limit() -> None:
    clock = [0.0]
    pacer = Pacer(1_000_000, 10, 100, clock=lambda: clock[0])
    session = ScriptedSession(ok([]), ok([]), ok([]))
    client = Client(
        "https://api.cloudflare.com/client/v4",
        Credentials(token=TOKEN),
        pacer=pacer,
        session=session,
        timeout=30,
    )
    client.list_rules(ZONE, TAG)
    clock[0] = 88.0  # 12 s left: the request may wait 12 s, not 30
    client.list_rules(ZONE, TAG)
    clock[0] = 99.5  # half a second left: still a usable floor of 1 s
    client.list_rules(ZONE, TAG)
    assert [call["timeout"] for call in session.calls] == [30, 12, 1.0]
