"""Log output: sd-daemon "<N>" prefixes only when stderr really is the journal (systemd.exec(5)).

$JOURNAL_STREAM holds "device:inode" of the journal stream systemd connected; a child that inherited the
variable while its stderr goes to a file or a pipe must print plain lines. Real files and pipes here.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.harness import RECONCILE


def file_id(path: Path) -> str:
    """JOURNAL_STREAM's value for a file: another file than stderr stands for the real journal."""
    path.touch()
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}"


def run_command(tmp_path: Path, stderr_file: Path, journal_stream: str | None) -> str:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("CLOUDFLARE_", "CREDENTIALS_", "JOURNAL_"))
    }
    if journal_stream is not None:
        env["JOURNAL_STREAM"] = journal_stream
    with stderr_file.open("w") as stderr:
        subprocess.run(
            [str(RECONCILE), "--config", str(tmp_path / "absent.toml")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            timeout=60,
            env=env,
        )
    return stderr_file.read_text()


def test_command_with_an_inherited_journal_stream_and_stderr_to_a_file(tmp_path: Path) -> None:
    """As `systemd-run ... sh -c 'reconcile 2>>file'` or a unit's ExecStart redirecting stderr: no <N>."""
    out = tmp_path / "stderr.log"
    expected = f"reconcile: error: {tmp_path / 'absent.toml'}: configuration file not found\n"
    assert run_command(tmp_path, out, file_id(tmp_path / "journal")) == expected
    # The control: the variable naming this very file (opened "w": same inode) makes it "the journal".
    assert run_command(tmp_path, out, file_id(out)) == expected.replace("reconcile: error: ", "<3>")
