"""`reconcile --check`'s schedule line (reconcile/ops/schedule.py): what runs reconcile every two minutes,
looked up in a temporary root laid out as the package, install.sh or an operator would leave it."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconcile.config import DEFAULT_PATH
from reconcile.ops import schedule
from reconcile.ops.check import Status, _schedule


def make(root: Path, *paths: str, link: tuple[str, str] | None = None) -> Path:
    for path in paths:
        target = root / path.lstrip("/")
        if path.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("")
    if link is not None:
        name, target_path = link
        at = root / name.lstrip("/")
        at.parent.mkdir(parents=True, exist_ok=True)
        at.symlink_to(target_path)  # absolute, as systemctl makes it: outside this root
    return root


SYSTEMD = "/run/systemd/system/"
PACKAGED_TIMER = "/lib/systemd/system/reconcile.timer"
ENABLED = "/etc/systemd/system/timers.target.wants/reconcile.timer"


def test_systemd_with_the_timer_enabled(tmp_path: Path) -> None:
    root = make(tmp_path, SYSTEMD, PACKAGED_TIMER, link=(ENABLED, PACKAGED_TIMER))
    found = schedule.find(root)
    assert found == schedule.Schedule(True, "reconcile.timer is enabled: a run every 2 minutes")
    assert _schedule(found).status is Status.OK and _schedule(found).name == "schedule"


@pytest.mark.parametrize("unit", [PACKAGED_TIMER, "/etc/systemd/system/reconcile.timer"])
def test_systemd_with_the_timer_installed_but_not_enabled_says_how(tmp_path: Path, unit: str) -> None:
    # A cron.d file and a configuration do not count where systemd runs: the cron line stands aside.
    root = make(tmp_path, SYSTEMD, unit, "/etc/cron.d/fail2ban-cloudflare-reconcile", str(DEFAULT_PATH))
    found = schedule.find(root)
    assert not found.scheduled and "not enabled" in found.found
    assert found.todo == "systemctl enable --now reconcile.timer"
    check = _schedule(found)
    assert check.status is Status.WARN and check.todo == found.todo


def test_systemd_without_the_timer(tmp_path: Path) -> None:
    found = schedule.find(make(tmp_path, SYSTEMD))
    assert not found.scheduled and found.found == "no reconcile.timer is installed: nothing runs reconcile"
    assert found.todo.endswith("systemctl enable --now reconcile.timer")


def test_an_enabled_link_without_systemd_running_is_not_a_schedule(tmp_path: Path) -> None:
    """A container or chroot: the link is there, but no systemd acts on it; only cron could run it."""
    root = make(tmp_path, PACKAGED_TIMER, link=(ENABLED, PACKAGED_TIMER))
    found = schedule.find(root)
    assert not found.scheduled and "no cron.d file" in found.found


@pytest.mark.parametrize("cron", ["/etc/cron.d/fail2ban-cloudflare-reconcile", "/etc/cron.d/reconcile"])
def test_cron_without_systemd(tmp_path: Path, cron: str) -> None:
    root = make(tmp_path, cron)
    waiting = schedule.find(root)
    assert not waiting.scheduled
    assert waiting.found == f"{cron} stands aside until {DEFAULT_PATH} exists"
    assert waiting.todo == f"write the configuration to {DEFAULT_PATH}"
    make(root, str(DEFAULT_PATH))
    running = schedule.find(root)
    assert running.scheduled and running.found.startswith(f"{cron} runs reconcile every 2 minutes")


def test_the_paths_are_the_ones_the_package_and_install_sh_use() -> None:
    repo = Path(__file__).resolve().parents[2]
    rules = (repo / "debian" / "rules").read_text()
    assert "$(DEST)/etc/cron.d/$(PKG)" in rules and "PKG := fail2ban-cloudflare-reconcile" in rules
    assert "$(DEST)/lib/systemd/system/reconcile.timer" in rules
    install = (repo / "cron" / "install.sh").read_text()
    assert '"$DESTDIR/etc/cron.d/reconcile"' in install and "UNIT_DIR=/etc/systemd/system" in install
    assert {str(p) for p in schedule.CRON_FILES} == {
        "/etc/cron.d/fail2ban-cloudflare-reconcile",
        "/etc/cron.d/reconcile",
    }
    cron = (repo / "cron" / "reconcile.cron").read_text()
    assert f"[ ! -d {schedule.SYSTEMD_RUNNING} ]" in cron and f"[ -e {DEFAULT_PATH} ]" in cron
