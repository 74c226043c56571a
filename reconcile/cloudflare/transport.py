"""All HTTP to Cloudflare, for every backend: session, pacing, retries, the JSON envelope, 429 and redaction
(DESIGN §6; base_url.py checks the base URL); plus the account-wide reads of the operator's tools (the
token's status, Cloudflare's own ranges and its clock; DESIGN §7, §11).

One place sends requests (`Transport.send`: pacing, retries, 429) and one place reads answers
(`Transport.envelope`: Cloudflare's JSON envelope or a CloudflareError). Secrets travel only in request
headers, which are never logged or put into an error. The resources live elsewhere: IP Access Rules in
rules.py, the account IP list in lists.py, the zones' WAF rule in waf.py.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self

import requests
import urllib3

from reconcile import __version__
from reconcile.cloudflare.answers import (
    Quota,
    cidrs,
    error_codes,
    http_date,
    quota,
    retry_after,
    show,
    timestamp,
)
from reconcile.cloudflare.base_url import checked_base_url
from reconcile.cloudflare.credentials import Credentials
from reconcile.cloudflare.pacing import Pacer, backoff
from reconcile.errors import CloudflareError, RateLimited, ReconcileError

# One logger for all Cloudflare traffic, whichever resource sends it.
log = logging.getLogger("reconcile.cloudflare")

USER_AGENT = f"reconcile/{__version__}"
_EXCERPT_CHARS = 120
_MESSAGE_CHARS = 300


class ApiError(CloudflareError):
    """Cloudflare answered with its error envelope (`success: false`); `codes` holds its error codes."""


class Response(Protocol):
    """What the transport reads of an HTTP answer (a requests.Response, or a test's fake)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...  # case-insensitive in requests; a fake's must be too
    @property
    def content(self) -> bytes: ...


class FakeSession(Protocol):
    """An in-process HTTP layer in place of requests.Session (a fleet simulation answers from memory on its
    own clock). `request` gets method, url and the keywords json, headers, timeout, verify and
    allow_redirects; faults are raised as requests' exceptions (requests.Timeout, ConnectionError)."""

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response: ...
    def close(self) -> None: ...


Session = requests.Session | FakeSession


@dataclass(frozen=True)
class TokenStatus:
    """What `GET /user/tokens/verify` says of the API token in use."""

    status: str  # Cloudflare's word: active | disabled | expired
    expires_on: datetime | None = None
    not_before: datetime | None = None


@dataclass(frozen=True)
class Answer:
    status: int
    content: bytes
    # An earlier attempt may have reached the server but its answer never came back.
    after_lost: bool = False


class Transport:
    """Requests to Cloudflare's API; every attempt passes `pacer.acquire` first.

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
        sleep: Callable[[float], None] | None = None,
        session: Session | None = None,
    ) -> None:
        self.base_url = checked_base_url(base_url)
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, not {timeout!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, not {retries!r}")
        self._credentials = credentials
        self._pacer = pacer
        self.timeout = timeout
        self.retries = retries
        # The pacer's clock and sleep by default: one injected clock drives the whole run.
        self._sleep = sleep if sleep is not None else pacer.sleep
        self._own_session = session is None
        self._session: Session = session if session is not None else requests.Session()
        self._blocked: RateLimited | None = None
        self._counting = threading.Lock()  # a listing's pages are sent from several threads
        self.requests = 0
        self.rate_limited = 0
        self.retried = 0
        self.last_date: datetime | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r}, {self._credentials!r})"

    @property
    def pacer(self) -> Pacer:
        """The run's Pacer: a backend that waits (operation polls) stays within its time limit."""
        return self._pacer

    def redact(self, text: str) -> str:
        """`text` with the secrets in use blanked: for text from Cloudflare that goes into a log."""
        return self._credentials.redact(text)

    def close(self) -> None:
        if self._own_session:
            self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- for the operator's tools (--check, --explain) --------------------------------------------------

    def verify_token(self) -> TokenStatus:
        """`GET /user/tokens/verify`. Only for an API token: with email + global key it raises ValueError."""
        if self._credentials.token is None:
            raise ValueError("an email + global API key is not a token: nothing to verify")
        path = "/user/tokens/verify"
        result = self.call("GET", path)

        def bad(what: str) -> CloudflareError:
            return CloudflareError(f"unexpected token status in answer: {what}", method="GET", path=path)

        if not isinstance(result, dict) or not isinstance(result.get("status"), str):
            raise bad("no status")
        return TokenStatus(
            status=result["status"],
            expires_on=timestamp(result.get("expires_on"), "token", "expires_on", bad),
            not_before=timestamp(result.get("not_before"), "token", "not_before", bad),
        )

    def cloudflare_ips(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Cloudflare's own published ranges from `GET /ips`: (IPv4 CIDRs, IPv6 CIDRs), normalised."""
        path = "/ips"
        # The endpoint is public (`security: [{}]`): no reason to send it a secret.
        result = self.envelope("GET", path, self.send("GET", path, None, authenticated=False))["result"]
        if not isinstance(result, dict):
            raise CloudflareError("result is not an object", method="GET", path=path)
        return cidrs(result, "ipv4_cidrs", 4, path), cidrs(result, "ipv6_cidrs", 6, path)

    # --- one request, start to finish ----------------------------------------------------------------

    def call(
        self, method: str, path: str, *, query: Mapping[str, str] | None = None, body: Any = None
    ) -> Any:
        """Send (with retries) and return the envelope's `result`, or raise."""
        shown = show(path, query)
        answer = self.send(method, shown, body)
        return self.envelope(method, shown, answer)["result"]

    def send(
        self,
        method: str,
        shown: str,
        body: Any,
        *,
        authenticated: bool = True,
        stop: threading.Event | None = None,
    ) -> Answer:
        """One request with bounded retries on 5xx and transport errors; 429 stops everything.

        Once `stop` is set (a listing no longer needs this page) no further attempt starts."""
        self._refuse_after_429(method, shown)
        url = self.base_url + shown
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if authenticated:
            headers.update(self._credentials.headers())
        problem, status = "", None
        lost = False  # an attempt that may have reached the server got no answer
        for attempt in range(self.retries + 1):
            if attempt:  # no backoff for an attempt that would not be sent
                self._go_ahead(method, shown, stop)
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
                self._go_ahead(method, shown, stop)  # before acquire counts an attempt that will not go
                with self._counting:
                    self.retried += 1
            number = self._pacer.acquire(f"{method} {shown}")
            try:  # another thread's request met a 429, or the listing ended, while this one waited
                self._go_ahead(method, shown, stop)
            except CloudflareError:
                self._pacer.finished(number)
                raise
            with self._counting:
                self.requests += 1
            # A request never outlives the run's time limit by more than a second.
            timeout = max(1.0, min(self.timeout, self._pacer.remaining()))
            started = self._pacer.clock()
            try:
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
                except BaseException:
                    self._pacer.finished(number)  # no answer to observe: no longer in flight
                    raise
            except requests.Timeout as exc:
                problem, status = f"no answer within {timeout:g} s ({type(exc).__name__})", None
                lost = lost or _may_have_arrived(exc)
                log.debug("%s %s -> %s after %d ms", method, shown, type(exc).__name__, self._ms(started))
                continue
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                problem, status = f"connection failed ({type(exc).__name__})", None
                lost = lost or _may_have_arrived(exc)
                log.debug("%s %s -> %s after %d ms", method, shown, type(exc).__name__, self._ms(started))
                continue
            except requests.RequestException as exc:
                # Not retryable (bad URL, bad header...). Class name only: some messages quote header values.
                raise CloudflareError(
                    f"request failed: {type(exc).__name__}", method=method, path=shown
                ) from None
            log.debug("%s %s -> %d in %d ms", method, shown, response.status_code, self._ms(started))
            self.last_date = http_date(response.headers.get("Date"))
            epoch = self.last_date.timestamp() if self.last_date is not None else None
            blocked = None
            if response.status_code == 429:
                blocked = RateLimited(
                    method=method, path=shown, retry_after=retry_after(response.headers.get("retry-after"))
                )
                # Blocked before the answer is observed: observe waits for the Pacer's lock, which a page
                # thread may hold while it sleeps before its start; it must find the run blocked on waking.
                self._blocked = blocked
                with self._counting:
                    self.rate_limited += 1
            # Every answer, 429s and errors included, says what is left of the account's quota.
            self._pacer.observe(quota(response.headers, epoch), number)
            if blocked is not None:
                raise blocked
            if response.status_code >= 500:
                problem, status = (
                    f"HTTP {response.status_code}{self._excerpt(response.content)}",
                    response.status_code,
                )
                continue
            return Answer(response.status_code, response.content, lost)
        raise CloudflareError(
            f"gave up after {self.retries + 1} attempts; last: {problem}",
            method=method,
            path=shown,
            status=status,
        )

    def raise_if_limited(self, instead_of: ReconcileError | None = None) -> None:
        """The RateLimited of the request that met the run's 429, if one did (not of one refused after it).
        `instead_of`: the error it replaces, still logged unless it is a 429 itself."""
        if self._blocked is not None:
            if instead_of is not None and not isinstance(instead_of, RateLimited):
                log.error("%s", instead_of)
            raise self._blocked

    def _refuse_after_429(self, method: str, shown: str) -> None:
        if self._blocked is not None:
            raise RateLimited(method=method, path=shown, retry_after=self._blocked.retry_after, refused=True)

    def _go_ahead(self, method: str, shown: str, stop: threading.Event | None) -> None:
        """Raise unless an attempt may still go: no 429 met by the run, and its listing still wants it."""
        self._refuse_after_429(method, shown)
        if stop is not None and stop.is_set():
            raise CloudflareError(
                "not sent: the listing ended before this page was needed", method=method, path=shown
            )

    def envelope(self, method: str, shown: str, answer: Answer) -> dict[str, Any]:
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
            codes, messages = error_codes(data.get("errors"))
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

    @property
    def quota(self) -> Quota | None:
        """The account's quota as the last answer that stated it said (for metrics and --check)."""
        return self._pacer.quota

    def _ms(self, started: float) -> int:
        return round((self._pacer.clock() - started) * 1000)

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


def _may_have_arrived(exc: requests.RequestException) -> bool:
    """False only when the request surely never reached the server (no connection was made)."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return not isinstance(reason, urllib3.exceptions.NewConnectionError)
