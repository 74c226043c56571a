"""What runs reconcile every two minutes, for `reconcile --check`: only stat calls, nothing is written.

The Debian package installs the timer and a cron.d file but starts neither before the operator has
configured a token and a zone (DESIGN §13): the operator enables the timer, and the cron line waits for the
configuration file. So a set-up can pass every other check and still never run; this says so, and how.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from reconcile.config import DEFAULT_PATH

# sd_booted(3)'s test, which Debian's own cron.d files use to stand aside for systemd.
SYSTEMD_RUNNING = Path("/run/systemd/system")
TIMER = "reconcile.timer"
# The package's (/lib), install.sh's (/etc), and /usr/lib where /lib is a link to it.
UNIT_DIRS = (Path("/etc/systemd/system"), Path("/lib/systemd/system"), Path("/usr/lib/systemd/system"))
# What `systemctl enable reconcile.timer` creates (its [Install] WantedBy=timers.target).
ENABLED = Path("/etc/systemd/system/timers.target.wants") / TIMER
# The package's cron.d file, and install.sh's (WITH_CRON=1).
CRON_FILES = (Path("/etc/cron.d/fail2ban-cloudflare-reconcile"), Path("/etc/cron.d/reconcile"))
ENABLE = f"systemctl enable --now {TIMER}"


@dataclass(frozen=True)
class Schedule:
    scheduled: bool
    found: str
    todo: str = ""


def find(root: Path = Path("/")) -> Schedule:
    """`root`: where the system's paths are looked up (a test's temporary tree)."""

    def at(path: Path) -> Path:
        return root / path.relative_to("/")

    if at(SYSTEMD_RUNNING).is_dir():
        if not any(at(directory / TIMER).exists() for directory in UNIT_DIRS):
            return Schedule(
                False,
                f"no {TIMER} is installed: nothing runs reconcile",
                f"install the Debian package or run make install-system, then: {ENABLE}",
            )
        # lexists: the link names the unit's real path, which need not resolve inside a test's root.
        if os.path.lexists(at(ENABLED)):
            return Schedule(True, f"{TIMER} is enabled: a run every 2 minutes")
        return Schedule(False, f"{TIMER} is not enabled: nothing runs reconcile yet", ENABLE)
    cron = next((path for path in CRON_FILES if at(path).exists()), None)
    if cron is None:
        return Schedule(
            False,
            "systemd does not run here and no cron.d file runs reconcile",
            f"run it from cron: install {CRON_FILES[0]} from the package, or WITH_CRON=1 make install-system",
        )
    if not at(DEFAULT_PATH).exists():
        return Schedule(
            False,
            f"{cron} stands aside until {DEFAULT_PATH} exists",
            f"write the configuration to {DEFAULT_PATH}",
        )
    return Schedule(True, f"{cron} runs reconcile every 2 minutes (systemd does not run here)")
