"""A local Cloudflare API emulator for IP Access Rules, used by every integration test.

A real HTTP/1.1 server on 127.0.0.1 that keeps rules per zone / account like Cloudflare, checks auth,
validates every request (and its own 2xx answers) against tests/support/cloudflare-openapi-subset.json with
openapi-core, rate-limits per fixed window and can inject faults. The contract is in the brief
(COMMON.md, "Cloudflare emulator contract"); the schema quirks are in cloudflare-openapi-subset.SOURCE.md.

Besides the rules: `GET /user/tokens/verify` (token status and expiry configurable) and `GET /ips`
(Cloudflare's ranges, configurable). Every answer's `Date` header comes from the emulator's clock plus
`date_offset`, for clock-skew checks. Paging like a less obliging server: `clamp_per_page` serves and
reports at most that many rules a page, `ignore_page` answers every page with the first one.

Account IP lists (asynchronous bulk operations) and zone WAF entry-point rulesets: tests/support/cf_lists.py.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import email.utils
import ipaddress
import json
import math
import re
import select
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from tests.support import cf_lists

ZONE_ID = "023e105f4ecef8ad9ca31a8372d0c353"
ZONE_ID_2 = "9a7806061c88ada191ed06f989cc3dac"
ACCOUNT_ID = "01a7362d577a6c3019a474fd6f485823"
TOKEN = "cf-test-token-Q7x9Zp2Lw4"  # distinctive, so tests can grep every output for it
EMAIL, GLOBAL_KEY = "ops@example.com", "cf-test-globalkey-8Hd3Km"

API_PREFIX = "/client/v4"
SPEC_PATH = Path(__file__).with_name("cloudflare-openapi-subset.json")
# openapi-core matches the request URL against the spec's `servers`, so requests are presented to it
# as if they had been sent to the real API host.
SPEC_HOST = "https://api.cloudflare.com"

FAULT_KINDS = frozenset(
    {
        "500",
        "502",
        "503",
        "success_false",
        "malformed_json",
        "missing_result",
        "reset",
        "delay",
        "400",
        "lost",  # carried out, then the connection is reset: the answer is lost
        "late",  # carried out at once, answered once the client gave up (at the latest after `delay`)
        "429",  # this one request refused as over the quota (Retry-After 60), the window left as it is
        "403",  # this one request refused as the token's permissions would (Cloudflare's code 10000)
    }
)
# "delay": carried out and answered once the client gave up (closed the connection), at the latest after
# `delay` s. Waiting for the client, not for a fixed time, keeps a delayed answer from ever reaching a
# client whose timeout a loaded machine stretched. A "delay", "late" or "lost" request is carried out
# before any later request for the same method and path: a retry never overtakes the attempt it repeats.
ORDERED_FAULTS = frozenset({"delay", "late", "lost"})
ALLOWED_MODES = ("whitelist", "block", "challenge", "js_challenge", "managed_challenge")
DEFAULT_PER_PAGE = 20  # Cloudflare's default when per_page is absent

# Error codes. 10009 / 10001 / 971 / 7003 / 6003 / 10000 are Cloudflare's; 10014 for a validation error
# is an assumption (real answers carry "firewallaccessrules.api.validation_error:..."), 9999 is ours.
E_DUPLICATE, E_NOT_FOUND, E_VALIDATION = 10009, 10001, 10014
E_NO_ROUTE, E_BAD_HEADERS, E_AUTH, E_RATE, E_SCHEMA, E_FAULT = 7003, 6003, 10000, 971, 9999, 10002

_ROUTE = re.compile(r"/(zones|accounts)/([^/]+)/firewall/access_rules/rules(?:/([^/]+))?")
# The other endpoints the emulator serves (method, path) -> name.
_OTHER = {("GET", "/user/tokens/verify"): "verify", ("GET", "/ips"): "ips"}
E_INVALID_TOKEN = 1000  # Cloudflare's "Invalid API Token" on /user/tokens/verify
TOKEN_STATUSES = ("active", "disabled", "expired")
# Quota headers on every answer: both kinds, only the IETF draft's Ratelimit/-Policy, only X-RateLimit-*.
RATE_HEADERS = ("both", "ietf", "legacy", "none")
# Token permissions a test may withhold (`denied`): what each endpoint needs, as the README names them.
PERMISSIONS = {
    "firewall_services": "Zone > Firewall Services (zone IP Access Rules)",
    "account_firewall_access_rules": "Account > Account Firewall Access Rules (account IP Access Rules)",
    "account_filter_lists": "Account > Account Filter Lists (IP lists, items, bulk operations)",
    "zone_waf": "Zone > Zone WAF (the zones' rulesets)",
}

# Cloudflare's published ranges (cloudflare.com/ips-v4 and ips-v6): 15 IPv4 and 7 IPv6 as of 2026-10.
CLOUDFLARE_IPV4 = (
    "173.245.48.0/20",
    "103.21.244.0/22",
    "103.22.200.0/22",
    "103.31.4.0/22",
    "141.101.64.0/18",
    "108.162.192.0/18",
    "190.93.240.0/20",
    "188.114.96.0/20",
    "197.234.240.0/22",
    "198.41.128.0/17",
    "162.158.0.0/15",
    "104.16.0.0/13",
    "104.24.0.0/14",
    "172.64.0.0/13",
    "131.0.72.0/22",
)
CLOUDFLARE_IPV6 = (
    "2400:cb00::/32",
    "2606:4700::/32",
    "2803:f800::/32",
    "2405:b500::/32",
    "2405:8100::/32",
    "2a06:98c0::/29",
    "2c0f:f248::/32",
)
_BEARER = re.compile(r"Bearer ([A-Za-z0-9._~+/=-]+)")
_RESET = object()  # _Reply sentinel: close the connection without answering

_SPEC_LOCK = threading.Lock()  # openapi-core's lazy caches are not documented as thread-safe
_SPEC: OpenAPI | None = None


@dataclass(frozen=True)
class RequestRecord:
    """One request as the emulator saw it. `path` has no /client/v4 prefix; `status` 0 means reset."""

    method: str
    path: str
    query: dict[str, str]
    body: Any  # parsed JSON, the raw text when not JSON, None when empty
    status: int
    auth: str  # "token" | "key" | "none" | "bad" (never the secret itself)


@dataclass
class _Fault:
    kind: str
    method: str | None
    path: str | None
    remaining: int
    delay: float
    page: int | None = None  # only that page of a listing (`page=` in the query)

    def matches(self, method: str, path: str, query: list[tuple[str, str]]) -> bool:
        if self.method is not None and self.method.upper() != method:
            return False
        if self.page is not None and ("page", str(self.page)) not in query:
            return False
        return self.path is None or re.search(self.path, path) is not None


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    check: bool = True  # validate against the schema (False for injected faults)


@dataclass
class _SpecRequest:
    """A request in the shape openapi-core's Request protocol wants (it writes `parameters`)."""

    method: str  # lowercase
    path: str  # with the /client/v4 prefix
    body: bytes | None
    content_type: str
    parameters: RequestParameters
    host_url: str = SPEC_HOST


@dataclass(frozen=True)
class _SpecResponse:
    status_code: int
    data: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Incoming:
    method: str  # uppercase
    path: str  # without the prefix (as given when the prefix is missing)
    prefixed: bool
    query: list[tuple[str, str]]
    headers: Message
    body: bytes | None
    # Blocks until the client has closed the connection or the given seconds have passed (a plain sleep
    # when the request did not come over a connection).
    wait_for_client: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    def record_body(self) -> Any:
        if not self.body:
            return None
        text = self.body.decode("utf-8", "replace")
        try:
            return json.loads(text)
        except ValueError:
            return text


# ---------------------------------------------------------------------------------------------- spec


def _prepared_spec() -> dict[str, Any]:
    """The schema with the quirks of cloudflare-openapi-subset.SOURCE.md patched out, in memory."""
    spec: dict[str, Any] = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    # Path-parameter identifier schemas are readOnly, which makes openapi-core reject every request.
    for name, schema in spec["components"]["schemas"].items():
        if name.endswith("identifier"):
            schema.pop("readOnly", None)
    # Operations list only email+key although API tokens work; the emulator checks auth itself.
    for ops in spec["paths"].values():
        for op in ops.values():
            # `security: [{}]` (GET /ips, quirk 9) means no authentication: left alone.
            if (
                isinstance(op, dict)
                and "security" in op
                and {"api_token": []} not in op["security"]
                and {} not in op["security"]
            ):
                op["security"] = [*op["security"], {"api_token": []}]
    # GET /ips 200 (quirk 7): `result` is oneOf two open schemas, one a superset of the other, so every
    # real body matches both and fails; anyOf keeps the type checks.
    ips_200 = spec["paths"]["/ips"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    for part in ips_200["allOf"]:
        result = part.get("properties", {}).get("result", {})
        if "oneOf" in result:
            result["anyOf"] = result.pop("oneOf")
    # GET /ips 4XX (quirk 8) is checked on the envelope fields like every error (response_problems).
    # Account PATCH bodies are {mode, notes} as on the zone level, not the full rule schema.
    zone_patch = spec["paths"]["/zones/{zone_id}/firewall/access_rules/rules/{identifier}"]["patch"]
    account_item = spec["paths"]["/accounts/{account_identifier}/firewall/access_rules/rules/{identifier}"]
    account_item["patch"]["requestBody"] = copy.deepcopy(zone_patch["requestBody"])
    cf_lists.prepare_spec(spec)  # the lists and rulesets quirks
    return spec


def _openapi() -> OpenAPI:
    """Load and prepare the spec once per process: tests start many emulators."""
    global _SPEC
    with _SPEC_LOCK:
        if _SPEC is None:
            _SPEC = OpenAPI.from_dict(_prepared_spec())
        return _SPEC


def _describe(exc: BaseException) -> str:
    """One line per schema error, instead of openapi-core's dump of the whole value."""
    name, location = getattr(exc, "name", None), getattr(exc, "location", None)
    where = f"{location} parameter {name}" if name and location else exc.__class__.__name__
    for cause in (exc, exc.__cause__):
        errors = getattr(cause, "schema_errors", None)
        if errors:
            return f"{where}: " + "; ".join(
                f"{'/'.join(str(p) for p in err.absolute_path) or '<value>'}: {err.message}" for err in errors
            )
    cause = exc.__cause__
    return f"{exc}" + (f" ({cause!r})" if cause is not None else "")


def _spec_request(inc: _Incoming) -> _SpecRequest:
    return _SpecRequest(
        method=inc.method.lower(),
        path=API_PREFIX + inc.path,
        body=cf_lists.validation_body(inc.method, inc.path, inc.body),  # rulesets quirk 4 (position)
        content_type=(inc.headers.get("Content-Type") or "").lower(),
        parameters=RequestParameters(
            query=ImmutableMultiDict(inc.query), header=Headers(list(inc.headers.items()))
        ),
    )


def request_problems(inc: _Incoming) -> list[str]:
    """Schema problems of one request (path params, query, body, security) according to the spec."""
    api = _openapi()
    with _SPEC_LOCK:
        errors = list(api.iter_request_errors(_spec_request(inc)))
    problems = [_describe(e) for e in errors]
    # Our client always sends a DELETE body; the spec demands one. Say so plainly when it is missing.
    return ["DELETE without a JSON body" if "Missing required request body" in p else p for p in problems]


def response_problems(inc: _Incoming, reply: _Reply) -> list[str]:
    """Check the emulator's own answer: 2xx against the schema, 4xx on the envelope fields only."""
    if 200 <= reply.status < 300:
        api = _openapi()
        response = _SpecResponse(reply.status, reply.body, reply.content_type)
        with _SPEC_LOCK:
            errors = list(api.iter_response_errors(_spec_request(inc), response))
        return [f"response {reply.status}: {_describe(e)}" for e in errors]
    return [f"response {reply.status}: {p}" for p in envelope_problems(reply.body)]


def envelope_problems(body: bytes) -> list[str]:
    """The 4XX schemas are allOf [success, failure] and contradict each other: check the envelope only."""
    try:
        doc = json.loads(body)
    except ValueError:
        return ["error body is not JSON"]
    if not isinstance(doc, dict):
        return ["error body is not an object"]
    problems = []
    if doc.get("success") is not False:
        problems.append("success is not false")
    errors = doc.get("errors")
    if not isinstance(errors, list) or not errors:
        problems.append("errors is not a non-empty list")
    elif not all(
        isinstance(e, dict) and isinstance(e.get("code"), int) and isinstance(e.get("message"), str)
        for e in errors
    ):
        problems.append("an error lacks an integer code or a string message")
    if not isinstance(doc.get("messages"), list):
        problems.append("messages is not a list")
    if "result" not in doc or doc["result"] is not None:
        problems.append("result is not null")
    return problems


# -------------------------------------------------------------------------------------------- values


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def normalised_value(target: str, value: str) -> str:
    """The identity Cloudflare compares for duplicates: 2001:DB8::1 and 2001:db8::1 are one rule."""
    try:
        if target in ("ip", "ip6"):
            return str(ipaddress.ip_address(value))
        if target == "ip_range":
            return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        pass
    return value.upper() if target in ("asn", "country") else value


def _rule_key(rule: dict[str, Any]) -> tuple[str, str]:
    config = rule["configuration"]
    return config["target"], normalised_value(config["target"], config["value"])


def value_problem(target: str, value: Any) -> str | None:
    """Why Cloudflare would refuse this configuration, or None."""
    if not isinstance(value, str) or not value:
        return "configuration.value must be a non-empty string"
    try:
        if target == "ip":
            ipaddress.IPv4Address(value)
        elif target == "ip6":
            ipaddress.IPv6Address(value)
        elif target == "ip_range":
            net = ipaddress.ip_network(value, strict=False)
            allowed = (16, 24) if net.version == 4 else (32, 48, 64)
            if net.prefixlen not in allowed:
                return f"invalid ip range provided: /{net.prefixlen}"
        elif target == "asn":
            if not re.fullmatch(r"(?i)(AS)?\d+", value):
                return "invalid asn provided"
        elif target == "country":
            if not re.fullmatch(r"[A-Za-z]{2}", value):
                return "invalid country code provided"
        else:
            return f"unsupported target received: {target}"
    except ValueError:
        return f"invalid {'ipv6 ' if target == 'ip6' else ''}ip provided"
    return None


def _envelope(result: Any, **extra: Any) -> dict[str, Any]:
    return {"success": True, "errors": [], "messages": [], "result": result, **extra}


def _json_reply(status: int, doc: Any, headers: tuple[tuple[str, str], ...] = ()) -> _Reply:
    return _Reply(status, json.dumps(doc).encode(), headers=headers)


def _error(status: int, code: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> _Reply:
    doc = {"success": False, "errors": [{"code": code, "message": message}], "messages": [], "result": None}
    return _json_reply(status, doc, headers)


def _html_error(status: int) -> _Reply:
    title = {500: "500 Internal Server Error", 502: "502 Bad Gateway", 503: "503 Service Unavailable"}[status]
    page = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
        "<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
    )
    return _Reply(status, page.encode(), content_type="text/html", check=False)


def _fault_reply(kind: str) -> _Reply:
    if kind in ("500", "502", "503"):
        return _html_error(int(kind))
    if kind == "success_false":
        doc = {
            "success": False,
            "errors": [{"code": E_FAULT, "message": "Internal error (injected fault)"}],
            "messages": [],
            "result": None,
        }
        return _Reply(200, json.dumps(doc).encode(), check=False)
    if kind == "malformed_json":
        return _Reply(200, b'{"success": true, "errors": [], "messages": [], "result": [{"id": ', check=False)
    if kind == "429":
        return _error(
            429, E_RATE, "Please wait and consider throttling your request speed", (("Retry-After", "60"),)
        )
    if kind == "403":
        return _error(403, E_AUTH, "Authentication error")
    if kind == "missing_result":
        return _Reply(200, json.dumps({"success": True, "errors": [], "messages": []}).encode(), check=False)
    # "400"
    reply = _error(400, E_VALIDATION, "firewallaccessrules.api.validation_error:injected fault")
    return _Reply(reply.status, reply.body, check=False)


def _int_param(raw: str | None, default: int) -> int | None:
    """page / per_page are `number` in the schema; only whole numbers make sense."""
    if raw is None:
        return default
    try:
        number = float(raw)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def _matches(rule: dict[str, Any], filters: dict[str, str], match_any: bool) -> bool:
    if not filters:
        return True
    config = rule["configuration"]
    results = []
    for name, wanted in filters.items():
        if name == "notes":
            results.append(wanted.casefold() in rule["notes"].casefold())
        elif name == "mode":
            results.append(rule["mode"] == wanted)
        elif name == "configuration.target":
            results.append(config["target"] == wanted)
        else:  # configuration.value
            results.append(
                normalised_value(config["target"], config["value"])
                == normalised_value(config["target"], wanted)
            )
    return any(results) if match_any else all(results)


# ------------------------------------------------------------------------------------------ emulator


class CloudflareEmulator(cf_lists.ListsHelpers):
    """IP Access Rules at zone and account level, served on 127.0.0.1. See the module docstring."""

    def __init__(
        self,
        *,
        tokens: Iterable[str] = (TOKEN,),
        email_keys: Iterable[tuple[str, str]] = ((EMAIL, GLOBAL_KEY),),
        zones: Iterable[str] = (ZONE_ID, ZONE_ID_2),
        accounts: Iterable[str] = (ACCOUNT_ID,),
        max_per_page: int = 1000,
        clamp_per_page: int | None = None,
        ignore_page: bool = False,
        rate_limit: int = 1200,
        rate_window: float = 300.0,
        time_scale: float = 1.0,
        validate_responses: bool = True,
        token_status: str = "active",
        token_expires_on: datetime | None = None,
        token_not_before: datetime | None = None,
        cloudflare_ipv4: Iterable[str] = CLOUDFLARE_IPV4,
        cloudflare_ipv6: Iterable[str] = CLOUDFLARE_IPV6,
        date_offset: float = 0.0,
        list_operation_delay: float = 0.0,
        busy_429: bool = True,
        list_capacity_limit: int = cf_lists.DEFAULT_CAPACITY,
        latency: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        rate_headers: str = "both",
        denied: Iterable[str] = (),
    ) -> None:
        if time_scale <= 0 or rate_window <= 0:
            raise ValueError("time_scale and rate_window must be > 0")
        if latency < 0:
            raise ValueError("latency must be >= 0")
        if clamp_per_page is not None and clamp_per_page < 1:
            raise ValueError("clamp_per_page must be >= 1")
        if token_status not in TOKEN_STATUSES:
            raise ValueError(f"token_status must be one of {TOKEN_STATUSES}")
        if rate_headers not in RATE_HEADERS:
            raise ValueError(f"rate_headers must be one of {RATE_HEADERS}")
        unknown = set(denied) - set(PERMISSIONS)
        if unknown:
            raise ValueError(f"unknown permissions {sorted(unknown)}; known: {sorted(PERMISSIONS)}")
        self._tokens = frozenset(tokens)
        self._email_keys = frozenset((email.lower(), key) for email, key in email_keys)
        zones_list, accounts_list = list(zones), list(accounts)
        self._scopes: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
            **{("zone", z): {} for z in zones_list},
            **{("account", a): {} for a in accounts_list},
        }
        # (target, normalised value) -> rule id per scope: duplicate checks stay O(1) with 10,000s of rules.
        self._keys: dict[tuple[str, str], dict[tuple[str, str], str]] = {scope: {} for scope in self._scopes}
        self.max_per_page = max_per_page  # per_page above it is refused (400)
        self.clamp_per_page = clamp_per_page  # per_page above it is served (and reported) as it
        self.ignore_page = ignore_page  # every page is answered with the first one
        # /user/tokens/verify; a token that is not active is refused everywhere else (403).
        self.token_status = token_status
        self.token_expires_on = token_expires_on
        self.token_not_before = token_not_before
        self.token_id = uuid.uuid4().hex
        self.cloudflare_ipv4 = tuple(cloudflare_ipv4)
        self.cloudflare_ipv6 = tuple(cloudflare_ipv6)
        self.date_offset = date_offset  # seconds the Date header is ahead of the emulator's clock
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.time_scale = time_scale
        # Which quota headers every answer carries (RATE_HEADERS); their `t`/`w` are client seconds (scaled).
        self.rate_headers = rate_headers
        # Permissions the API token lacks (PERMISSIONS): the endpoints that need one answer 403.
        self.denied = frozenset(denied)
        self.neighbour_spent = 0  # requests spend() counted for another client of the account
        self.neighbour_limited = 0  # ...of which the limiter refused (a 429 that client would have got)
        # Checking 2xx answers costs ~0.5 ms per listed rule; benchmarks with thousands may turn it off.
        self.validate_responses = validate_responses
        # Real seconds every answer waits (a WAN round trip), slept outside the lock: benchmarks use 0.05.
        self.latency = latency
        self.requests: list[RequestRecord] = []
        self.violations: list[str] = []
        self.rate_limited = 0
        self._faults: list[_Fault] = []
        # (method, path, query) -> events of faulted requests still being carried out (ORDERED_FAULTS). The
        # query is part of it: a delayed page 3 is repeated only by page 3, and must not hold up page 4.
        self._in_flight: dict[tuple[str, str, tuple[tuple[str, str], ...]], list[threading.Event]] = {}
        self._lock = threading.Lock()
        # Seconds (real ones, before time_scale): a test may drive a clock of its own (test_rate_limit.py).
        self._clock = clock
        self._t0 = clock()
        self._epoch = datetime.now(UTC)
        self._offset = 0.0
        self._window_index = 0
        self._window_count = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # Account IP lists and zone rulesets (tests/support/cf_lists.py); its options are attributes there.
        self.lists_state = cf_lists.ListsState(
            accounts=accounts_list,
            zones=zones_list,
            clock=self._elapsed,
            now=self.now,
            operation_delay=list_operation_delay,
            busy_429=busy_429,
            capacity_limit=list_capacity_limit,
        )

    # ----------------------------------------------------------------------------- lifecycle

    def start(self) -> CloudflareEmulator:
        if self._server is not None:
            raise RuntimeError("emulator already started")
        _openapi()  # load the spec before the first request, not inside its timeout
        server = _Server(("127.0.0.1", 0), _Handler)
        server.emulator = self
        self._server = server
        # A short poll interval: stop() waits for it, and tests start and stop many emulators.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="cf-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> CloudflareEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("emulator not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}{API_PREFIX}"

    # --------------------------------------------------------------------------------- clock

    def _elapsed(self) -> float:
        """Emulated seconds since the emulator was created."""
        return (self._clock() - self._t0) * self.time_scale + self._offset

    def now(self) -> datetime:
        """The emulator's clock (UTC): created_on/modified_on use it; it runs time_scale times faster."""
        return self._epoch + timedelta(seconds=self._elapsed())

    def date(self) -> datetime:
        """What the `Date` header of an answer says: the emulator's clock plus `date_offset`."""
        return self.now() + timedelta(seconds=self.date_offset)

    def set_clock_offset(self, seconds: float) -> None:
        """Move emulated time forward (or back) by `seconds` from where the scaled clock would be."""
        with self._lock:
            self._offset = seconds

    def window_remaining(self) -> float:
        """Emulated seconds left in the current rate-limit window."""
        return self.rate_window - (self._elapsed() % self.rate_window)

    # ---------------------------------------------------------------------------- seeding / inspection

    def _scope(self, kind: str, scope_id: str) -> dict[str, dict[str, Any]]:
        try:
            return self._scopes[(kind, scope_id)]
        except KeyError:
            raise ValueError(f"unknown {kind} {scope_id!r}") from None

    def _new_rule(
        self, kind: str, scope_id: str, target: str, value: str, mode: str, notes: str, created: str
    ) -> dict[str, Any]:
        rule: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "paused": False,
            "mode": mode,
            "allowed_modes": list(ALLOWED_MODES),
            "configuration": {"target": target, "value": value},
            "notes": notes,
            "created_on": created,
            "modified_on": created,
        }
        if kind == "account":
            # Account responses are `result: object` in the schema, so Cloudflare's scope fits.
            rule["scope"] = {"id": scope_id, "type": "account"}
        return rule

    def _duplicate(self, scope: tuple[str, str], target: str, value: str) -> str | None:
        return self._keys[scope].get((target, normalised_value(target, value)))

    def _store(self, scope: tuple[str, str], rule: dict[str, Any]) -> None:
        self._keys[scope][_rule_key(rule)] = rule["id"]
        self._scopes[scope][rule["id"]] = rule

    def add_rule(
        self,
        kind: str,
        scope_id: str,
        target: str,
        value: str,
        *,
        mode: str = "block",
        notes: str = "",
        created_on: datetime | str | None = None,
    ) -> dict[str, Any]:
        """Seed a rule directly (not logged, not rate-limited); raises ValueError where the API would 400."""
        problem = value_problem(target, value)
        if problem is not None:
            raise ValueError(problem)
        if mode not in ALLOWED_MODES:
            raise ValueError(f"invalid mode {mode!r}")
        if isinstance(created_on, datetime):
            created = _iso(created_on)
        else:
            created = created_on if created_on is not None else _iso(self.now())
        with self._lock:
            self._scope(kind, scope_id)  # ValueError for an unknown scope
            if self._duplicate((kind, scope_id), target, value) is not None:
                raise ValueError(f"duplicate rule for {target} {value}")
            rule = self._new_rule(kind, scope_id, target, value, mode, notes, created)
            self._store((kind, scope_id), rule)
            return copy.deepcopy(rule)

    def rules(self, kind: str = "zone", scope_id: str = ZONE_ID) -> list[dict[str, Any]]:
        """A snapshot of one scope's rules in creation order, in the API's shape."""
        with self._lock:
            return copy.deepcopy(list(self._scope(kind, scope_id).values()))

    def has_rule(self, kind: str, scope_id: str, target: str, value: str) -> bool:
        """Whether the scope holds a rule for `value` now: O(1), for polling (the latency benchmark)."""
        with self._lock:
            return self._duplicate((kind, scope_id), target, value) is not None

    def writes(self) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if r.method in ("POST", "PATCH", "PUT", "DELETE")]

    def clear_log(self) -> None:
        """Forget the request log (violations stay: they still fail the test)."""
        with self._lock:
            self.requests.clear()

    def clear_faults(self) -> None:
        """Drop every queued fault ("the faults stop")."""
        with self._lock:
            self._faults.clear()

    def inject(
        self,
        kind: str,
        *,
        method: str | None = None,
        path: str | None = None,
        count: int = 1,
        delay: float = 0.0,
        page: int | None = None,
    ) -> None:
        """The next `count` requests matching method (exact), path (re.search) and, given, the listing's
        `page` get the fault `kind` (by page: the client may ask for several pages at once)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {sorted(FAULT_KINDS)}")
        if count < 1:
            raise ValueError("count must be >= 1")
        if path is not None:
            re.compile(path)
        with self._lock:
            self._faults.append(_Fault(kind, method, path, count, delay, page))

    # ------------------------------------------------------------------------------- dispatch

    def _take_fault(self, method: str, path: str, query: list[tuple[str, str]]) -> _Fault | None:
        for fault in self._faults:
            if fault.matches(method, path, query):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _count(self, n: int = 1) -> bool:
        """Count `n` requests in the current fixed window; False once the window is over its limit."""
        index = int(self._elapsed() // self.rate_window)
        if index != self._window_index:
            self._window_index, self._window_count = index, 0
        self._window_count += n
        return self._window_count <= self.rate_limit

    def _rate_check(self) -> _Reply | None:
        """Count this request in the current fixed window; a 429 once the window is over its limit."""
        if self._count():
            return None
        self.rate_limited += 1
        elapsed = self._elapsed()
        retry_after = max(1, math.ceil(self.rate_window - elapsed % self.rate_window))
        return _error(
            429,
            E_RATE,
            "Please wait and consider throttling your request speed",
            (("Retry-After", str(retry_after)),),
        )

    def spend(self, n: int = 1) -> bool:
        """Another client of the account (a dashboard user, another tool) spends `n` requests of the quota
        now; False (counted in `neighbour_limited`) when the limiter would have answered it 429."""
        with self._lock:
            ok = self._count(n)
            self.neighbour_spent += n
            self.neighbour_limited += 0 if ok else 1
            return ok

    def quota_left(self) -> int:
        """Requests left in the current window (what the next answer's `r` says, before counting it)."""
        with self._lock:
            if int(self._elapsed() // self.rate_window) != self._window_index:
                return self.rate_limit
            return max(0, self.rate_limit - self._window_count)

    def _quota_headers(self) -> tuple[tuple[str, str], ...]:
        """What is left of the window, as Cloudflare states it; `t` and `w` in the client's seconds."""
        if self.rate_headers == "none":
            return ()
        left = max(0, self.rate_limit - self._window_count)
        # Whole seconds as Cloudflare sends them; scaled, a window of a few seconds needs hundredths.
        scaled = self.time_scale != 1
        remaining, window_s = self.window_remaining() / self.time_scale, self.rate_window / self.time_scale
        reset = f"{remaining:.2f}" if scaled else str(max(0, math.ceil(remaining)))
        window = f"{window_s:.2f}" if scaled else str(max(1, round(window_s)))
        headers: list[tuple[str, str]] = []
        if self.rate_headers in ("both", "ietf"):
            headers += [
                ("Ratelimit", f'"default";r={left};t={reset}'),
                ("Ratelimit-Policy", f'"default";q={self.rate_limit};w={window}'),
            ]
        if self.rate_headers in ("both", "legacy"):
            headers += [
                ("X-RateLimit-Limit", str(self.rate_limit)),
                ("X-RateLimit-Remaining", str(left)),
                ("X-RateLimit-Reset", str(reset)),
            ]
        return tuple(headers)

    def _permission_needed(self, inc: _Incoming, route: re.Match[str] | None) -> str | None:
        """The permission this request needs that the token lacks (`denied`), else None."""
        if not self.denied:
            return None
        need: str | None = None
        if route is not None:  # read and edit are withheld together here
            need = "firewall_services" if route[1] == "zones" else "account_firewall_access_rules"
        else:
            found = cf_lists.route(inc.method, inc.path)
            if found is not None:
                need = "account_filter_lists" if cf_lists.is_lists_route(found[0]) else "zone_waf"
        return need if need in self.denied else None

    def _auth(self, headers: Message) -> str:
        """Classify the credentials: token, key, none, malformed or bad (the last two are logged as "bad")."""
        authorization = headers.get("Authorization")
        email, key = headers.get("X-Auth-Email"), headers.get("X-Auth-Key")
        if authorization is not None:
            m = _BEARER.fullmatch(authorization.strip())
            if m is None:
                return "malformed"
            return "token" if m[1] in self._tokens else "bad"
        if email is None and key is None:
            return "none"
        if not email or not key:
            return "malformed"
        return "key" if (email.strip().lower(), key.strip()) in self._email_keys else "bad"

    def _record(self, inc: _Incoming, status: int, auth: str) -> None:
        record = RequestRecord(
            inc.method,
            inc.path,
            dict(inc.query),
            inc.record_body(),
            status,
            "bad" if auth == "malformed" else auth,
        )
        with self._lock:
            self.requests.append(record)

    def _violate(self, inc: _Incoming, problems: list[str]) -> None:
        with self._lock:
            self.violations.extend(f"{inc.method} {inc.path}: {p}" for p in problems)

    def dispatch(self, inc: _Incoming) -> _Reply | object:
        """Answer one request (or _RESET); records it, and any violation, on the way."""
        if self.latency:
            time.sleep(self.latency)
        auth = self._auth(inc.headers)
        route = _ROUTE.fullmatch(inc.path) if inc.prefixed else None
        if route is not None and inc.method not in (
            ("GET", "POST") if route[3] is None else ("PATCH", "DELETE")
        ):
            route = None  # e.g. GET of one rule: cut from the schema subset, so no route here either
        other = _OTHER.get((inc.method, inc.path)) if inc.prefixed else None
        if other is None and inc.prefixed and cf_lists.route(inc.method, inc.path) is not None:
            other = "lists"  # account lists and zone rulesets: answered by tests/support/cf_lists.py
        key = (inc.method, inc.path, tuple(inc.query))
        done_event: threading.Event | None = None
        with self._lock:
            limited = self._rate_check()
            quota = self._quota_headers()
            fault = None if limited is not None else self._take_fault(inc.method, inc.path, inc.query)
            earlier = list(self._in_flight.get(key, ()))
            if fault is not None and fault.kind in ORDERED_FAULTS:
                done_event = threading.Event()
                self._in_flight.setdefault(key, []).append(done_event)
        try:
            for event in earlier:  # the attempt this one may repeat is carried out first
                event.wait(timeout=30)
            reply = self._dispatch_faulted(inc, route, other, auth, limited, fault, done_event)
            if isinstance(reply, _Reply) and quota:
                reply = dataclasses.replace(reply, headers=reply.headers + quota)
            return reply
        finally:
            if done_event is not None:
                done_event.set()
                with self._lock:
                    self._in_flight[key].remove(done_event)

    def _dispatch_faulted(
        self,
        inc: _Incoming,
        route: re.Match[str] | None,
        other: str | None,
        auth: str,
        limited: _Reply | None,
        fault: _Fault | None,
        done_event: threading.Event | None,
    ) -> _Reply | object:
        if limited is not None:
            self._record(inc, limited.status, auth)
            return limited
        if fault is not None and fault.kind == "delay":
            # outside the lock: the threaded server keeps answering others meanwhile
            inc.wait_for_client(fault.delay)
            fault = None
        if fault is not None and fault.kind in ("lost", "late"):
            done = self._answered(inc, route, other, auth, record=fault.kind == "late")
            assert done_event is not None
            done_event.set()  # carried out: a retry may go ahead while this answer waits
            if fault.kind == "late":
                inc.wait_for_client(fault.delay)
                return done
            self._record(inc, 0, auth)  # the client sees a reset, whatever the server did
            return _RESET
        if fault is not None:
            # The answer is the fault, but a request that breaks the schema is still a client bug.
            if other == "ips" or ((route is not None or other is not None) and auth in ("token", "key")):
                problems = request_problems(inc)
                if problems:
                    self._violate(inc, problems)
            if fault.kind == "reset":
                self._record(inc, 0, auth)
                return _RESET
            faulty = _fault_reply(fault.kind)
            self._record(inc, faulty.status, auth)
            return faulty
        return self._answered(inc, route, other, auth)

    def _answered(
        self,
        inc: _Incoming,
        route: re.Match[str] | None,
        other: str | None,
        auth: str,
        *,
        record: bool = True,
    ) -> _Reply:
        """The real answer, checked against the schema (and logged unless `record` is False)."""
        reply = self._answer_other(inc, other, auth) if other else self._answer(inc, route, auth)
        if reply.check and (self.validate_responses or reply.status >= 300):
            problems = response_problems(inc, reply)
            if problems:
                self._violate(inc, problems)
        if record:
            self._record(inc, reply.status, auth)
        return reply

    def _answer(self, inc: _Incoming, route: re.Match[str] | None, auth: str) -> _Reply:
        if route is None:
            return _error(404, E_NO_ROUTE, "No route for that URI")
        if auth in ("none", "malformed"):
            return _error(400, E_BAD_HEADERS, "Invalid request headers")
        if auth == "bad" or (auth == "token" and self.token_status != "active"):
            return _error(403, E_AUTH, "Authentication error")
        if auth == "token" and self._permission_needed(inc, route) is not None:
            return _error(403, E_AUTH, "Authentication error")  # Cloudflare does not say which permission
        problems = request_problems(inc)
        if problems:
            self._violate(inc, problems)
            return _error(400, E_SCHEMA, "Request does not match the API schema: " + problems[0])
        kind = "zone" if route[1] == "zones" else "account"
        scope_id, rule_id = route[2], route[3]
        if (kind, scope_id) not in self._scopes:
            return _error(
                404, E_NO_ROUTE, f"Could not route to {inc.path}, perhaps your object identifier is invalid?"
            )
        try:
            body = json.loads(inc.body) if inc.body and inc.method in ("POST", "PATCH") else {}
        except ValueError:
            body = None  # cannot pass the schema check; kept for safety
        if inc.method == "GET":
            return self._list(kind, scope_id, dict(inc.query))
        if inc.method == "POST":
            return self._create(kind, scope_id, body)
        assert rule_id is not None
        if inc.method == "PATCH":
            return self._patch(kind, scope_id, rule_id, body)
        return self._delete(kind, scope_id, rule_id)

    def _answer_other(self, inc: _Incoming, other: str, auth: str) -> _Reply:
        """GET /ips (public) and GET /user/tokens/verify (API tokens only); lists and rulesets."""
        if other == "lists":
            return self._answer_lists(inc, auth)
        if other == "verify":
            if auth in ("none", "malformed", "key"):
                return _error(400, E_BAD_HEADERS, "Invalid request headers")
            if auth == "bad":
                return _error(401, E_INVALID_TOKEN, "Invalid API Token")
        problems = request_problems(inc)
        if problems:
            self._violate(inc, problems)
            return _error(400, E_SCHEMA, "Request does not match the API schema: " + problems[0])
        if other == "ips":
            result: dict[str, Any] = {
                "ipv4_cidrs": list(self.cloudflare_ipv4),
                "ipv6_cidrs": list(self.cloudflare_ipv6),
                "etag": uuid.uuid5(uuid.NAMESPACE_URL, repr(self.cloudflare_ipv4 + self.cloudflare_ipv6)).hex,
            }
            if dict(inc.query).get("networks") == "jdcloud":
                result["jdcloud_cidrs"] = []
            return _json_reply(200, _envelope(result))
        token: dict[str, Any] = {"id": self.token_id, "status": self.token_status}
        if self.token_expires_on is not None:
            token["expires_on"] = self.token_expires_on.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.token_not_before is not None:
            token["not_before"] = self.token_not_before.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        messages = (
            [{"code": 10000, "message": "This API Token is valid and active", "type": None}]
            if self.token_status == "active"
            else []
        )
        return _json_reply(200, {**_envelope(token), "messages": messages})

    def _answer_lists(self, inc: _Incoming, auth: str) -> _Reply:
        """Account lists and zone rulesets: auth and schema as for the rules, then cf_lists.py."""
        found = cf_lists.route(inc.method, inc.path)
        assert found is not None
        if auth in ("none", "malformed"):
            return _error(400, E_BAD_HEADERS, "Invalid request headers")
        if auth == "bad" or (auth == "token" and self.token_status != "active"):
            return _error(403, E_AUTH, "Authentication error")
        if auth == "token" and self._permission_needed(inc, None) is not None:
            return _error(403, E_AUTH, "Authentication error")
        problems = request_problems(inc)
        if problems:
            self._violate(inc, problems)
            return _error(400, E_SCHEMA, "Request does not match the API schema: " + problems[0])
        try:
            body = json.loads(inc.body) if inc.body else None
        except ValueError:
            body = None  # a body the schema check let through (on a GET, say) is not read
        status, doc = self.lists_state.handle(found[0], found[1], inc.method, dict(inc.query), body)
        return _json_reply(status, doc)

    # ------------------------------------------------------------------------------- handlers

    def _list(self, kind: str, scope_id: str, query: dict[str, str]) -> _Reply:
        page = _int_param(query.get("page"), 1)
        per_page = _int_param(query.get("per_page"), DEFAULT_PER_PAGE)
        if page is None or page < 1:
            return _error(400, E_VALIDATION, "firewallaccessrules.api.validation_error:invalid page")
        if self.ignore_page:
            page = 1
        if per_page is None or not (
            per_page == 1 or (per_page % 5 == 0 and 5 <= per_page <= self.max_per_page)
        ):
            return _error(
                400,
                E_VALIDATION,
                f"firewallaccessrules.api.validation_error:per_page must be 1 or a multiple of 5 "
                f"up to {self.max_per_page}",
            )
        if self.clamp_per_page is not None:
            per_page = min(per_page, self.clamp_per_page)
        names = ("notes", "mode", "configuration.target", "configuration.value")
        filters = {n: query[n] for n in names if n in query}
        with self._lock:
            rules = [
                r
                for r in self._scopes[(kind, scope_id)].values()
                if _matches(r, filters, query.get("match") == "any")
            ]
            order = query.get("order")
            if order is not None:  # stable, so equal keys keep creation order
                key = order.split(".")[-1]
                rules.sort(
                    key=lambda r: str(r.get(key, r["configuration"].get(key))),
                    reverse=query.get("direction") == "desc",
                )
            # Only the page is copied: copying every rule per page made listing 50,000 rules quadratic.
            chunk = copy.deepcopy(rules[(page - 1) * per_page : page * per_page])
        info = {
            "page": page,
            "per_page": per_page,
            "count": len(chunk),
            "total_count": len(rules),
            "total_pages": math.ceil(len(rules) / per_page),
        }
        return _json_reply(200, _envelope(chunk, result_info=info))

    def _create(self, kind: str, scope_id: str, body: Any) -> _Reply:
        config = body.get("configuration") if isinstance(body, dict) else None
        if not isinstance(config, dict) or not isinstance(body.get("notes", ""), str):
            return _error(400, E_VALIDATION, "firewallaccessrules.api.validation_error:invalid request body")
        target, value = config.get("target"), config.get("value")
        problem = value_problem(str(target), value)
        if problem is not None:
            return _error(400, E_VALIDATION, f"firewallaccessrules.api.validation_error:{problem}")
        with self._lock:
            if self._duplicate((kind, scope_id), str(target), str(value)) is not None:
                return _error(400, E_DUPLICATE, "firewallaccessrules.api.duplicate_of_existing")
            rule = self._new_rule(
                kind, scope_id, str(target), str(value), body["mode"], body.get("notes", ""), _iso(self.now())
            )
            self._store((kind, scope_id), rule)
            return _json_reply(200, _envelope(copy.deepcopy(rule)))

    def _patch(self, kind: str, scope_id: str, rule_id: str, body: Any) -> _Reply:
        if not isinstance(body, dict) or not isinstance(body.get("notes", ""), str):
            return _error(400, E_VALIDATION, "firewallaccessrules.api.validation_error:invalid request body")
        with self._lock:
            rule = self._scopes[(kind, scope_id)].get(rule_id)
            if rule is None:
                return _error(404, E_NOT_FOUND, "firewallaccessrules.api.not_found")
            # Only mode and notes can change (the API ignores the rest).
            for name in ("mode", "notes"):
                if name in body:
                    rule[name] = body[name]
            rule["modified_on"] = _iso(self.now())
            return _json_reply(200, _envelope(copy.deepcopy(rule)))

    def _delete(self, kind: str, scope_id: str, rule_id: str) -> _Reply:
        with self._lock:
            rule = self._scopes[(kind, scope_id)].pop(rule_id, None)
            if rule is None:
                return _error(404, E_NOT_FOUND, "firewallaccessrules.api.not_found")
            del self._keys[(kind, scope_id)][_rule_key(rule)]
        return _json_reply(200, _envelope({"id": rule_id}))


# ------------------------------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    emulator: CloudflareEmulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out (the "delay" fault) closes its socket before the late answer: quiet.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries Content-Length
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is the record; stderr noise helps nobody

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The `Date` header (send_response adds it): from the emulator's clock, not the host's."""
        if timestamp is not None:
            return super().date_time_string(timestamp)
        return email.utils.format_datetime(self.server.emulator.date(), usegmt=True)

    def _wait_for_client(self, limit: float) -> None:
        """Block until the client closed the connection (it gave up), or at most `limit` s."""
        deadline = time.monotonic() + limit
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.connection], [], [], left)
            if not readable:
                return  # `limit` passed
            try:
                if not self.connection.recv(1, socket.MSG_PEEK):
                    return  # closed
            except OSError:
                return  # reset
            time.sleep(max(0.0, deadline - time.monotonic()))  # the client sent more: still there
            return

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else None
        split = urlsplit(self.path)
        prefixed = split.path == API_PREFIX or split.path.startswith(API_PREFIX + "/")
        inc = _Incoming(
            method=self.command,
            path=split.path[len(API_PREFIX) :] if prefixed else split.path,
            prefixed=prefixed,
            query=parse_qsl(split.query, keep_blank_values=True),
            headers=self.headers,
            body=body,
            wait_for_client=self._wait_for_client,
        )
        try:
            reply = self.server.emulator.dispatch(inc)
        except Exception as exc:
            # An emulator bug must fail the test loudly, not look like a network fault to the client.
            self.server.emulator._violate(inc, [f"emulator crashed: {exc!r}"])
            reply = _error(500, E_FAULT, f"emulator crashed: {exc!r}")
        if not isinstance(reply, _Reply):
            # "reset": RST instead of an answer (SO_LINGER 0), so the client sees a ConnectionError.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()  # the fd really closes when finish() drops rfile/wfile
            self.close_connection = True
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("CF-RAY", uuid.uuid4().hex[:16] + "-EWR")
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)


# ------------------------------------------------------------------------------------------ fixture


@contextlib.contextmanager
def checked_emulator(**options: Any) -> Iterator[CloudflareEmulator]:
    """A started emulator (CloudflareEmulator options); fails the test at exit if the schema was broken."""
    emulator = CloudflareEmulator(**options).start()
    try:
        yield emulator
    finally:
        emulator.stop()
    if emulator.violations:
        pytest.fail("Cloudflare schema violations:\n" + "\n".join(emulator.violations), pytrace=False)


@pytest.fixture
def cf() -> Iterator[CloudflareEmulator]:
    """A started emulator with the default options; the test fails if any request broke the schema."""
    with checked_emulator() as emulator:
        yield emulator
