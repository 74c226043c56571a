"""`reconcile --check` (DESIGN §7). PLACEHOLDER: the signature cli.py calls; the lead writes the body."""

from __future__ import annotations

import logging

from reconcile.config import Config
from reconcile.credentials import Credentials
from reconcile.errors import EXIT_FAILURE

log = logging.getLogger(__name__)


def main(config: Config, creds: Credentials, fmt: str) -> int:
    """Run every check, print one line per check (`fmt`: "table" or "json"); 0 with no `fail`, else 1."""
    log.error("--check is not implemented yet")
    return EXIT_FAILURE
