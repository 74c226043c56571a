"""Which rows `reconcile --report` shows: `--action add,expire`, `--jail NAME`. Pure.

A value of its own so that the command line (which parses and validates it) and the renderer (which applies
it) share one meaning, and the renderer needs nothing from argparse.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class ReportFilter:
    """Empty sets mean "every action" / "every jail"; the two filters combine with AND."""

    actions: frozenset[str] = frozenset()  # values of reconcile.plan.Action
    jails: frozenset[str] = frozenset()

    @property
    def active(self) -> bool:
        return bool(self.actions or self.jails)

    def matches(self, action: str, jails: Iterable[str]) -> bool:
        """A row with this action and these jails (its ban's; none for a rule nothing bans) is shown.

        With a jail filter, a row whose address no jail bans (an expiry for "no longer banned") is hidden:
        it belongs to no jail.
        """
        if self.actions and str(action) not in self.actions:
            return False
        return not self.jails or any(jail in self.jails for jail in jails)
