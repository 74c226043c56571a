"""Cloudflare's answers read into values: envelope errors, Retry-After, Date, whole numbers, times and CIDR
lists. No IO.
"""

from __future__ import annotations

import email.utils
import ipaddress
import math
from collections.abc import Callable, Mapping
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
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
