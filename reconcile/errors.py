"""Exceptions, each carrying the exit code DESIGN §7 gives it."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_UNSAFE = 3
EXIT_PARTIAL = 4


class ReconcileError(Exception):
    """Base class: a failure the CLI reports in one line, without a traceback."""

    exit_code = EXIT_FAILURE


class ConfigError(ReconcileError):
    """A malformed, unknown or missing configuration value (the message names file and key)."""

    exit_code = EXIT_CONFIG


class Fail2banError(ReconcileError):
    """fail2ban could not be read completely; the run must stop before planning."""


class CloudflareError(ReconcileError):
    """Cloudflare answered with an error, or with something that is not its JSON envelope.

    Carries the request it answered (method and path, never a header, so never the token).
    """

    def __init__(
        self,
        message: str,
        *,
        method: str,
        path: str,
        status: int | None = None,
        codes: tuple[int, ...] = (),
    ) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.codes = codes
        where = f"{method} {path}"
        if status is not None:
            where += f" -> HTTP {status}"
        if codes:
            where += " (codes " + ", ".join(str(c) for c in codes) + ")"
        super().__init__(f"{where}: {message}")


class RateLimited(CloudflareError):
    """HTTP 429: the token is blocked; the run stops at once and leaves the rest to the next run."""

    exit_code = EXIT_PARTIAL

    def __init__(self, *, method: str, path: str, retry_after: float | None, refused: bool = False) -> None:
        self.retry_after = retry_after
        when = f"retry after {retry_after:g} s" if retry_after is not None else "no retry-after given"
        if refused:  # never sent: no HTTP status of its own to show (`--check` lists each such request)
            message = f"not sent: an earlier request was rate limited by Cloudflare ({when})"
            super().__init__(message, method=method, path=path)
        else:
            super().__init__(f"rate limited by Cloudflare ({when})", method=method, path=path, status=429)


class BudgetExhausted(ReconcileError):
    """The run used its request budget or its time limit; the rest is left to the next run."""

    exit_code = EXIT_PARTIAL


class LockStuck(ReconcileError):
    """The run lock has been held for longer than any run takes: not "another run", a failure (exit 1).

    Carries the holder's pid and since when it holds the lock, as the holder recorded them.
    """

    def __init__(self, message: str, *, pid: int | None, since: str) -> None:
        self.pid = pid
        self.since = since
        super().__init__(message)
