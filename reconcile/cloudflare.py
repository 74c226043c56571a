"""All HTTP to Cloudflare: IP Access Rules at zone or account level (DESIGN §3, §6), and for the operator's
tools (--check, --explain) the token's status, Cloudflare's own ranges and its clock (DESIGN §7, §11).

One place sends requests (`Client._send`: pacing, retries, 429) and one place reads answers
(`Client._envelope`: Cloudflare's JSON envelope or a CloudflareError). Secrets travel only in request
headers, which are never logged or put into an error.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import requests
import urllib3

from reconcile import __version__
from reconcile.credentials import Credentials
from reconcile.errors import CloudflareError, ConfigError, RateLimited
from reconcile.model import IPAddress, Rule, Scope
from reconcile.pacing import Pacer, backoff

log = logging.getLogger("reconcile.cloudflare")

USER_AGENT = f"reconcile/{__version__}"
CODE_DUPLICATE = 10009  # "firewallaccessrules.api.duplicate_of_existing"
_EXCERPT_CHARS = 120
_MESSAGE_CHARS = 300


class ApiError(CloudflareError):
    """Cloudflare answered with its error envelope (`success: false`); `codes` holds its error codes."""


class IncompleteListing(CloudflareError):
    """A page of a listing could not be read: `.rules` holds what was read before it, `.cause` why not."""

    def __init__(self, scope: Scope, rules: tuple[Rule, ...], cause: CloudflareError) -> None:
        self.scope = scope
        self.rules = rules
        self.cause = cause
        self.method, self.path, self.status, self.codes = cause.method, cause.path, cause.status, cause.codes
        # Not CloudflareError.__init__: the cause's message already names the request.
        Exception.__init__(self, f"listing of {scope} incomplete after {len(rules)} rules: {cause}")


@dataclass(frozen=True)
class TokenStatus:
    """What `GET /user/tokens/verify` says of the API token in use."""

    status: str  # Cloudflare's word: active | disabled | expired
    expires_on: datetime | None = None
    not_before: datetime | None = None


@dataclass(frozen=True)
class Created:
    """What a create came to: `rule` as Cloudflare stored it, or None when it answered 10009 (duplicate)."""

    rule: Rule | None
    # The 10009 came after an attempt of this same POST that got no answer (timeout, reset): that attempt
    # stored the rule, so it is ours and the create is done, not a foreign rule.
    stored_earlier: bool = False

    @property
    def duplicate(self) -> bool:
        """A rule this client did not make already covers the value."""
        return self.rule is None and not self.stored_earlier


@dataclass(frozen=True)
class _Answer:
    status: int
    content: bytes
    # An earlier attempt may have reached the server but its answer never came back.
    after_lost: bool = False


class Client:
    """Cloudflare API client for IP Access Rules; every attempt passes `pacer.acquire` first.

    Counters for the run summary: `requests` (attempts sent), `rate_limited` (429s), `retried` (retries).
    `last_date` is the `Date` header of the last answer (None when it had none): for clock-skew checks.
    After a 429 the client refuses every further request of the run.
    """

    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        pacer: Pacer,
        timeout: float = 30.0,
        retries: int = 3,
        sleep: Callable[[float], None] = time.sleep,
        per_page: int = 1000,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = _check_base_url(base_url)
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, not {timeout!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, not {retries!r}")
        if not (per_page == 1 or (per_page % 5 == 0 and 5 <= per_page <= 1000)):
            raise ValueError(f"per_page must be 1 or a multiple of 5 up to 1000, not {per_page!r}")
        self._credentials = credentials
        self._pacer = pacer
        self.timeout = timeout
        self.retries = retries
        self.per_page = per_page
        self._sleep = sleep
        self._own_session = session is None
        self._session = session if session is not None else requests.Session()
        self._blocked: RateLimited | None = None
        self.requests = 0
        self.rate_limited = 0
        self.retried = 0
        self.last_date: datetime | None = None

    def __repr__(self) -> str:
        return f"Client({self.base_url!r}, {self._credentials!r})"

    def close(self) -> None:
        if self._own_session:
            self._session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- IP Access Rules -----------------------------------------------------------------------------

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
        answer = self._send("POST", path, body)
        try:
            result = self._envelope("POST", path, answer)["result"]
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
            result = self._call("PATCH", path, body={"mode": mode, "notes": notes})
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
            self._call("DELETE", path, body={})
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # --- for the operator's tools (--check, --explain) --------------------------------------------------

    def verify_token(self) -> TokenStatus:
        """`GET /user/tokens/verify`. Only for an API token: with email + global key it raises ValueError."""
        if self._credentials.token is None:
            raise ValueError("an email + global API key is not a token: nothing to verify")
        path = "/user/tokens/verify"
        result = self._call("GET", path)

        def bad(what: str) -> CloudflareError:
            return CloudflareError(f"unexpected token status in answer: {what}", method="GET", path=path)

        if not isinstance(result, dict) or not isinstance(result.get("status"), str):
            raise bad("no status")
        return TokenStatus(
            status=result["status"],
            expires_on=_timestamp(result.get("expires_on"), "token", "expires_on", bad),
            not_before=_timestamp(result.get("not_before"), "token", "not_before", bad),
        )

    def cloudflare_ips(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Cloudflare's own published ranges from `GET /ips`: (IPv4 CIDRs, IPv6 CIDRs), normalised."""
        path = "/ips"
        # The endpoint is public (`security: [{}]`): no reason to send it a secret.
        result = self._envelope("GET", path, self._send("GET", path, None, authenticated=False))["result"]
        if not isinstance(result, dict):
            raise CloudflareError("result is not an object", method="GET", path=path)
        return _cidrs(result, "ipv4_cidrs", 4, path), _cidrs(result, "ipv6_cidrs", 6, path)

    # --- one request, start to finish ----------------------------------------------------------------

    def _list(self, scope: Scope, filters: Mapping[str, str]) -> list[Rule]:
        """All pages of one filtered listing (DESIGN §6 "Listing never ends early")."""
        rules: list[Rule] = []
        seen: set[str] = set()
        page = 1
        while True:
            query = {**filters, "page": str(page), "per_page": str(self.per_page)}
            shown = _show(scope.rules_path, query)
            try:
                document = self._envelope("GET", shown, self._send("GET", shown, None))
                result = document["result"]
                if not isinstance(result, list):
                    raise CloudflareError(
                        f"result is {type(result).__name__}, not a list of rules", method="GET", path=shown
                    )
                batch = [_parse_rule(item, scope, "GET", shown) for item in result]
            except RateLimited:
                raise
            except CloudflareError as exc:
                raise IncompleteListing(scope, tuple(rules), exc) from exc
            # Offset pages shift while other hosts write; keep the first copy of a rule seen twice.
            new = [rule for rule in batch if rule.id not in seen]
            seen.update(rule.id for rule in new)
            rules.extend(new)
            size, pages = _paging(document.get("result_info"), self.per_page)
            # The page size is the one the server says it used: a server that clamps 1000 to 50 still
            # has more pages after a page of 50.
            if not batch or len(batch) < size or (pages is not None and page >= pages):
                return rules
            if not new:
                # Asking on would only spend the run's budget on the same page again.
                cause = CloudflareError(
                    f"page {page} is full but brings no rule not seen before (server ignores `page`?)",
                    method="GET",
                    path=shown,
                    status=200,
                )
                raise IncompleteListing(scope, tuple(rules), cause)
            page += 1

    def _call(
        self, method: str, path: str, *, query: Mapping[str, str] | None = None, body: Any = None
    ) -> Any:
        """Send (with retries) and return the envelope's `result`, or raise."""
        shown = _show(path, query)
        answer = self._send(method, shown, body)
        return self._envelope(method, shown, answer)["result"]

    def _send(self, method: str, shown: str, body: Any, *, authenticated: bool = True) -> _Answer:
        """One request with bounded retries on 5xx and transport errors; 429 stops everything."""
        if self._blocked is not None:
            raise RateLimited(method=method, path=shown, retry_after=self._blocked.retry_after)
        url = self.base_url + shown
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if authenticated:
            headers.update(self._credentials.headers())
        problem, status = "", None
        lost = False  # an attempt that may have reached the server got no answer
        for attempt in range(self.retries + 1):
            if attempt:
                delay = backoff(attempt - 1)
                log.info(
                    "retrying %s %s in %.2f s (attempt %d of %d): %s",
                    method,
                    shown,
                    delay,
                    attempt + 1,
                    self.retries + 1,
                    problem,
                )
                self._sleep(delay)
                self.retried += 1
            self._pacer.acquire(f"{method} {shown}")
            self.requests += 1
            # A request never outlives the run's time limit by more than a second.
            timeout = max(1.0, min(self.timeout, self._pacer.remaining()))
            started = time.monotonic()
            try:
                response = self._session.request(
                    method,
                    url,
                    json=body,
                    headers=headers,
                    timeout=timeout,
                    verify=True,  # explicit: overrides a session that was handed in with verify=False
                    allow_redirects=False,  # an API redirect is unexpected; never resend credentials
                )
            except requests.Timeout as exc:
                problem, status = f"no answer within {timeout:g} s ({type(exc).__name__})", None
                lost = lost or _may_have_arrived(exc)
                log.debug("%s %s -> %s after %d ms", method, shown, type(exc).__name__, _ms(started))
                continue
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                problem, status = f"connection failed ({type(exc).__name__})", None
                lost = lost or _may_have_arrived(exc)
                log.debug("%s %s -> %s after %d ms", method, shown, type(exc).__name__, _ms(started))
                continue
            except requests.RequestException as exc:
                # Not retryable (bad URL, bad header...). Class name only: some messages quote header values.
                raise CloudflareError(
                    f"request failed: {type(exc).__name__}", method=method, path=shown
                ) from None
            log.debug("%s %s -> %d in %d ms", method, shown, response.status_code, _ms(started))
            self.last_date = _http_date(response.headers.get("Date"))
            if response.status_code == 429:
                self.rate_limited += 1
                self._blocked = RateLimited(
                    method=method, path=shown, retry_after=_retry_after(response.headers.get("retry-after"))
                )
                raise self._blocked
            if response.status_code >= 500:
                problem, status = (
                    f"HTTP {response.status_code}{self._excerpt(response.content)}",
                    response.status_code,
                )
                continue
            return _Answer(response.status_code, response.content, lost)
        raise CloudflareError(
            f"gave up after {self.retries + 1} attempts; last: {problem}",
            method=method,
            path=shown,
            status=status,
        )

    def _envelope(self, method: str, shown: str, answer: _Answer) -> dict[str, Any]:
        """A successful envelope (with its `result`); otherwise the one CloudflareError that explains it."""
        status = answer.status
        try:
            data = json.loads(answer.content)
        except (ValueError, RecursionError):
            raise CloudflareError(
                f"answer is not JSON{self._excerpt(answer.content)}", method=method, path=shown, status=status
            ) from None
        if not isinstance(data, dict):
            raise CloudflareError(
                f"answer is JSON {type(data).__name__}, not an object",
                method=method,
                path=shown,
                status=status,
            )
        success = data.get("success")
        if not isinstance(success, bool):
            raise CloudflareError(
                "answer has no boolean `success` field", method=method, path=shown, status=status
            )
        if not success:
            codes, messages = _errors(data.get("errors"))
            text = self._credentials.redact("; ".join(messages)) or "no error message"
            raise ApiError(
                f"Cloudflare refused: {text[:_MESSAGE_CHARS]}",
                method=method,
                path=shown,
                status=status,
                codes=codes,
            )
        if not 200 <= status < 300:
            raise CloudflareError(
                "answer says success but the HTTP status does not", method=method, path=shown, status=status
            )
        if "result" not in data:
            raise CloudflareError("answer has no `result`", method=method, path=shown, status=status)
        return data

    def _excerpt(self, content: bytes) -> str:
        """': <first ~120 characters, whitespace collapsed>' of a body, or '' for an empty one."""
        text = " ".join(content[:4096].decode("utf-8", "replace").split())
        if not text:
            return ""
        text = self._credentials.redact(text)
        if len(text) > _EXCERPT_CHARS:
            text = text[:_EXCERPT_CHARS] + "..."
        return f": {text!r}"


# --- helpers --------------------------------------------------------------------------------------------


def _check_base_url(base_url: str) -> str:
    """The base URL without a trailing slash; https, or http to a loopback host only (tests)."""
    where = "[cloudflare] api_base_url"
    try:
        parts = urlsplit(base_url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"{where}: not a valid URL: {base_url!r} ({exc})") from None
    if parts.scheme not in ("https", "http") or not host:
        raise ConfigError(f"{where}: must be an https:// URL, not {base_url!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{where}: must not contain credentials")
    if parts.query or parts.fragment:
        raise ConfigError(f"{where}: must not have a query or fragment: {base_url!r}")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ConfigError(
            f"{where}: plain http:// is allowed only for a loopback host, not {host!r}; use https://"
        )
    return base_url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _rule_path(scope: Scope, rule_id: str) -> str:
    # Quoted so that an odd id can never address another path.
    return f"{scope.rules_path}/{quote(rule_id, safe='')}"


def _show(path: str, query: Mapping[str, str] | None) -> str:
    """Path plus query string, exactly as sent (spaces as %20) and as logged."""
    return f"{path}?{urlencode(query, quote_via=quote)}" if query else path


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _errors(errors: object) -> tuple[tuple[int, ...], list[str]]:
    """Codes and messages out of an envelope's `errors`, tolerating odd shapes."""
    codes: list[int] = []
    messages: list[str] = []
    if isinstance(errors, list):
        for item in errors:
            if isinstance(item, dict):
                code, message = item.get("code"), item.get("message")
                if isinstance(code, int) and not isinstance(code, bool):
                    codes.append(code)
                if message is not None:
                    messages.append(str(message))
    return tuple(codes), messages


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _may_have_arrived(exc: requests.RequestException) -> bool:
    """False only when the request surely never reached the server (no connection was made)."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return not isinstance(reason, urllib3.exceptions.NewConnectionError)


def _whole(value: object) -> int | None:
    """A JSON number that is a whole number (result_info fields are `number` in the schema), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)


def _paging(info: object, asked: int) -> tuple[int, int | None]:
    """From result_info: the page size the server used (never more than asked) and its page count."""
    size, pages = asked, None
    if isinstance(info, dict):
        reported = _whole(info.get("per_page"))
        if reported is not None and reported > 0:
            size = min(asked, reported)
        total = _whole(info.get("total_pages"))
        if total is not None and total > 0:  # 0 with rules on the page would be nonsense: not trusted
            pages = total
    return size, pages


def _http_date(value: str | None) -> datetime | None:
    """An HTTP `Date` header as an aware UTC datetime; None when absent or unreadable."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


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


def _cidrs(result: dict[str, Any], name: str, version: int, path: str) -> tuple[str, ...]:
    values = result.get(name)
    if not isinstance(values, list) or not values:
        raise CloudflareError(f"`{name}` is not a non-empty list", method="GET", path=path)
    networks = []
    for value in values:
        try:
            net = ipaddress.ip_network(value, strict=False) if isinstance(value, str) else None
        except ValueError:
            net = None
        if net is None or net.version != version:
            raise CloudflareError(
                f"`{name}` holds {str(value)[:60]!r}, not an IPv{version} network", method="GET", path=path
            )
        networks.append(str(net))
    return tuple(networks)


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
        created_on=_timestamp(item.get("created_on"), rule_id, "created_on", bad),
        modified_on=_timestamp(item.get("modified_on"), rule_id, "modified_on", bad),
    )


def _timestamp(
    value: object, rule_id: str, name: str, bad: Callable[[str], CloudflareError]
) -> datetime | None:
    """An aware UTC datetime from the API's ISO 8601 text (naive taken as UTC); None when absent."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad(f"rule {rule_id} has {name} of type {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise bad(f"rule {rule_id} has {name} {value[:40]!r}, not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
