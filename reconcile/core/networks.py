"""Looked-up origin AS and country written into a plan's leases (DESIGN §10); out of planner.py, at its
400-line limit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from reconcile.core.changes import Plan
from reconcile.core.model import IPAddress
from reconcile.core.notes import format_note


def with_networks(plan: Plan, networks: Mapping[IPAddress, tuple[str, str | None]], tag: str) -> Plan:
    """The plan with looked-up origin AS (and country) in every write's lease (DESIGN §10).

    Only writes change: optional fields never cause a write, they fill in when a rule is written anyway.
    A fresh lookup wins over an AS carried over from an older note.
    """
    changes = []
    for change in plan.changes:
        found = networks.get(change.ip) if change.ip is not None and change.lease is not None else None
        if found is not None and change.lease is not None:
            lease = replace(change.lease, asn=found[0], cc=found[1])
            notes = format_note(tag, lease)
            if notes is not None:  # an AS that would not fit is simply not written
                change = replace(change, lease=lease, notes=notes, asn=found[0])
        changes.append(change)
    return replace(plan, changes=tuple(changes))
