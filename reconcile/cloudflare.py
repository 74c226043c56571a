"""Cloudflare's API, by the names other modules and tests have always imported from here.

The code lives in one module per job: transport.py (all HTTP: pacing, retries, envelope, 429,
redaction), rules.py (the IP Access Rules backend), lists.py (the account IP list backend) and waf.py
(the zones' custom rule that enforces the list). backend.py is the seam a run talks to.
"""

from __future__ import annotations

from reconcile.rules import (
    CODE_DUPLICATE,
    Client,
    Created,
    IncompleteListing,
    RulesBackend,
    _parse_rule,
    list_scope,
)
from reconcile.transport import USER_AGENT, ApiError, TokenStatus, Transport, _retry_after

__all__ = [
    "CODE_DUPLICATE",
    "USER_AGENT",
    "ApiError",
    "Client",
    "Created",
    "IncompleteListing",
    "RulesBackend",
    "TokenStatus",
    "Transport",
    "_parse_rule",
    "_retry_after",
    "list_scope",
]
