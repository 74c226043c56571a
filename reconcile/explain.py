"""`reconcile --explain IP` (DESIGN §7). PLACEHOLDER: the signature cli.py calls; the lead writes the body."""

from __future__ import annotations

import logging

from reconcile.config import Config
from reconcile.credentials import Credentials
from reconcile.errors import EXIT_FAILURE
from reconcile.model import IPAddress

log = logging.getLogger(__name__)


def main(config: Config, creds: Credentials, ip: IPAddress, fmt: str) -> int:
    """Print everything about `ip` (`fmt`: "table" or "json"); 0, or 1 when a side cannot be read."""
    log.error("--explain is not implemented yet (%s)", ip)
    return EXIT_FAILURE
