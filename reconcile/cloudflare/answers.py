"""Cloudflare's answers read into values: envelope errors, Retry-After, Date, whole numbers, times and CIDR
lists. No IO.
"""

from __future__ import annotations

import email.utils
import ipaddress
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from reconcile.errors import CloudflareError


def show(path: str, query: Mapping[str, str] | None) -> str:
    """Path plus query string, exactly as sent (spaces as %20) and as logged."""
    return f"{path}?{urlencode(query, quote_via=quote)}" if query else path


def error_codes(errors: object) -> tuple[tuple[int, ...], list[str]]:
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


def retry_after(value: str | None) -> float | None:
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


def whole(value: object) -> int | None:
    """A JSON number that is a whole number (result_info fields are `number` in the schema), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)


def http_date(value: str | None) -> datetime | None:
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


def cidrs(result: dict[str, Any], name: str, version: int, path: str) -> tuple[str, ...]:
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


def timestamp(
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
    if parsed.tzinfo is UTC:  # Cloudflare's `Z`: nearly every time, two per listed rule
        return parsed
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


@dataclass(frozen=True)
class Quota:
    """What one answer says of the account's API quota (DESIGN §12).

    `remaining` requests are left until the window resets in `reset` seconds; `limit` requests per
    `window` seconds is the policy (None when the answer did not say)."""

    remaining: int
    reset: float
    limit: int | None = None
    window: float | None = None


def quota(headers: Mapping[str, str], epoch: float | None) -> Quota | None:
    """The quota an answer's headers state: `Ratelimit` + `Ratelimit-Policy` (IETF draft, what Cloudflare
    sends), else the older `X-RateLimit-Limit/-Remaining/-Reset`; None when neither says what is left.

    `epoch` (Unix time now, from the answer's Date header) reads an `X-RateLimit-Reset` that is a Unix time
    rather than seconds; without it such a reset is unknown."""
    fields = _sf_params(headers.get("Ratelimit"))
    policy = _sf_params(headers.get("Ratelimit-Policy"))
    remaining, reset = _count(fields.get("r")), _seconds(fields.get("t"))
    limit, window = _count(policy.get("q")), _seconds(policy.get("w"))
    if remaining is None or reset is None:
        remaining = _count(headers.get("X-RateLimit-Remaining"))
        reset = _seconds(headers.get("X-RateLimit-Reset"))
        if reset is not None and reset > 1e9:  # a Unix time, not a number of seconds
            reset = None if epoch is None else max(0.0, reset - epoch)
        limit = limit if limit is not None else _count(headers.get("X-RateLimit-Limit"))
    if remaining is None or reset is None or reset > _LONGEST_WAIT:
        return None  # a window does not reset days from now: a broken header is no reason to wait
    if limit is not None and limit < remaining:
        limit = None  # nonsense together: trust what is left, not the policy
    return Quota(remaining, reset, limit, window)


def _sf_params(value: str | None) -> dict[str, str]:
    """The parameters of the `"default"` item of a structured-field list (`"x";r=1, "default";r=5;t=30`),
    or of its first item when none is named so."""
    if not value:
        return {}
    items = value.split(",")
    first = next((i for i in items if i.split(";", 1)[0].strip() == '"default"'), items[0])
    params: dict[str, str] = {}
    for part in first.split(";")[1:]:
        name, sep, raw = part.partition("=")
        if sep:
            params.setdefault(name.strip().lower(), raw.strip())
    return params


def _count(raw: str | None) -> int | None:
    if raw is None or not raw.strip().isdigit() or len(raw.strip()) > 12:
        return None
    return int(raw.strip())


def _seconds(raw: str | None) -> float | None:
    """Seconds, or a Unix time (X-RateLimit-Reset); None when unreadable, negative or absurd."""
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and 0 <= value < _ABSURD else None


# No quota window lasts a century: beyond this a `t` (or a Unix time) is a broken header, not a wait.
_ABSURD = 4e9
_LONGEST_WAIT = 86400.0
