"""Logging to stderr, one line per event; journald-level prefixes when running under systemd."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import TextIO

from reconcile.core.sanitize import escape

# sd-daemon(3) priority prefixes: journald stores the line at this level and strips the prefix.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _Formatter(logging.Formatter):
    def __init__(self, journald: bool) -> None:
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        # Every line may carry other writers' text (notes, host names, AS names, error messages of servers):
        # no escape sequence or bidi override reaches the terminal, the journal or cron's mail (DESIGN §12).
        message = escape(record.getMessage())
        if record.exc_info:
            message += "\n" + escape(self.formatException(record.exc_info))
        if self.journald:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{message}"
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return f"reconcile: {level}{message}"


class _Redact(logging.Filter):
    """Defence in depth: whatever a message holds, a known secret never reaches the output."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(s in message for s in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, "***")
            record.msg, record.args = message, None
        return True


def is_journal(stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether `stream` is connected to the journal: systemd.exec(5) says to compare $JOURNAL_STREAM
    ("device:inode") with the stream's fstat. A child that inherited the variable but writes to a file,
    a pipe or a terminal is not the journal, and must not print "<6>" prefixes there."""
    match = re.fullmatch(r"([0-9]+):([0-9]+)", environ.get("JOURNAL_STREAM", ""))
    if not match:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no descriptor (StringIO), closed, or None
        return False
    return (st.st_dev, st.st_ino) == (int(match.group(1)), int(match.group(2)))


def setup(verbosity: int, stream: TextIO | None = None, journald: bool | None = None) -> logging.Logger:
    """verbosity -1: warnings and errors; 0: also each change and the summary; 1: also every API request."""
    stream = stream or sys.stderr
    if journald is None:
        journald = is_journal(stream)
    logger = logging.getLogger("reconcile")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_Formatter(journald))
    logger.addHandler(handler)
    logger.setLevel({-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG))
    logger.propagate = False
    return logger


def redact(secrets: Iterable[str]) -> None:
    for handler in logging.getLogger("reconcile").handlers:
        handler.addFilter(_Redact(secrets))
