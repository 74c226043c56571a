"""The API base URL a transport may talk to (DESIGN §6): https, or plain http to a loopback host only (the
tests' emulator), never with credentials, a query or a fragment in it."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from reconcile.errors import ConfigError


def checked_base_url(base_url: str) -> str:
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
