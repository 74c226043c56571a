"""docs/reconcile.8 renders: groff reads it without a warning, and man(1) shows it, as `man reconcile` will
once the Debian package has installed it. (What it says is checked in tests/unit/test_manpage.py.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "docs" / "reconcile.8"


def test_groff_reads_it_without_a_warning() -> None:
    result = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(PAGE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_man_shows_it() -> None:
    env = {**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8", "MAN_KEEP_FORMATTING": ""}
    result = subprocess.run(
        ["man", "--warnings", "-l", str(PAGE)], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["RECONCILE(8)", "System", "Administration", "RECONCILE(8)"]
    for heading in ("NAME", "SYNOPSIS", "OPTIONS", "EXIT STATUS", "FILES", "ENVIRONMENT", "EXAMPLES"):
        assert heading in lines, heading
    assert "       reconcile --check" not in lines  # examples are indented further than body text
    assert "           reconcile --check" in lines
