"""The emulator's account IP lists and zone rulesets behave like Cloudflare's: `requests` on loopback."""

from __future__ import annotations

import json

from tests.support.cf_emulator import (
    ACCOUNT_ID,
)

LISTS = f"/accounts/{ACCOUNT_ID}/rules/lists"


# ------------------------------------------------------------------------------------------- lists


# ------------------------------------------------------------------------------------------- items


# ------------------------------------------------------------------------------ bulk operations


# ------------------------------------------------------------------------------------- rulesets


# ------------------------------------------------------------------------------- schema control


def test_list_answers_are_checked_against_the_patched_schema() -> None:
    """A control: the lists answers are validated (after the two patches), so a broken one is caught."""
    from email.message import Message

    from tests.support.cf_emulator import _Incoming, _Reply, response_problems

    inc = _Incoming("GET", LISTS, True, [], Message(), None)
    good = {"id": "a" * 32, "name": "x", "kind": "ip", "num_items": 0, "created_on": "t", "modified_on": "t"}
    envelope = {"success": True, "errors": [], "messages": []}
    assert response_problems(inc, _Reply(200, json.dumps({**envelope, "result": [good]}).encode())) == []
    broken = {k: v for k, v in good.items() if k != "num_items"}
    problems = response_problems(inc, _Reply(200, json.dumps({**envelope, "result": [broken]}).encode()))
    assert problems and "num_items" in problems[0]
