"""The expiry guard (DESIGN §6): boundaries of the fraction and of the minimum rule count."""

import pytest

from reconcile.core.changes import Action, Change, Plan
from reconcile.core.model import Scope, ScopeKind
from reconcile.core.safety import unsafe_reasons

ZONE = Scope(ScopeKind.ZONE, "023e105f4ecef8ad9ca31a8372d0c353")
OTHER = Scope(ScopeKind.ZONE, "9a7806061c88ada191ed06f989cc3dac")


def plan_with(managed: int, expiring: int, scope=ZONE, extra=()) -> Plan:
    changes = [Change(Action.EXPIRE, f"45.155.205.{i}", "no longer banned", scope) for i in range(expiring)]
    changes += [
        Change(Action.KEEP, f"45.155.206.{i}", "up to date", scope) for i in range(managed - expiring)
    ]
    return Plan(tuple(changes) + tuple(extra), {scope: managed})


@pytest.mark.parametrize(
    ("managed", "expiring", "refused"),
    [
        (10, 3, False),  # exactly 30 %: allowed (refused only when strictly greater)
        (10, 4, True),  # 40 % > 30 %
        (9, 9, False),  # fewer than 10 managed rules: the guard does not apply
        (20, 20, True),
        (100, 30, False),
        (100, 31, True),
        (10, 0, False),
    ],
)
def test_fraction_boundaries(managed, expiring, refused):
    plan = plan_with(managed, expiring)
    assert bool(unsafe_reasons(plan, 0.3)) is refused


def test_message_names_the_numbers():
    (reason,) = unsafe_reasons(plan_with(20, 20), 0.3)
    assert reason == (
        "zone 023e105f4ecef8ad9ca31a8372d0c353: refusing to expire 20 of 20 managed rules, "
        "more than 30% of 20 (6); run with --force if this is intended"
    )


def test_each_scope_is_judged_on_its_own_rules():
    # 4 of 10 in one zone is too many even though 4 of 110 across both zones would not be.
    busy = plan_with(100, 0, scope=OTHER)
    plan = plan_with(10, 4, extra=busy.changes)
    plan = Plan(plan.changes, {ZONE: 10, OTHER: 100})
    (reason,) = unsafe_reasons(plan, 0.3)
    assert reason.startswith(f"zone {ZONE.id}: refusing to expire 4 of 10")


def test_configured_fraction():
    assert unsafe_reasons(plan_with(10, 1), 0.0)
    assert not unsafe_reasons(plan_with(10, 10), 1.0)


@pytest.mark.parametrize(
    ("fraction", "managed", "expiring", "refused"),
    [
        (0.7, 90, 63, False),  # 0.7 * 90 is 62.999... in floats: exactly at the limit must pass
        (0.7, 90, 64, True),
        (0.1, 30, 3, False),
        (0.3, 10, 3, False),
        (0.29, 100, 29, False),
        (0.29, 100, 30, True),
    ],
)
def test_limit_is_compared_exactly(fraction, managed, expiring, refused):
    assert bool(unsafe_reasons(plan_with(managed, expiring), fraction)) is refused


def test_a_leave_is_not_a_delete():
    # Renewals (joins and leaves) never count, however many there are.
    leaves = [Change(Action.RENEW, f"45.155.207.{i}", "leave", ZONE) for i in range(50)]
    assert not unsafe_reasons(plan_with(60, 0, extra=leaves), 0.3)
