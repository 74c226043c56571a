"""The peak RSS of a command, sampled while it runs.

Not getrusage(RUSAGE_CHILDREN): Linux carries ru_maxrss over from the (v)forked parent across exec, so once
the pytest process is large every child "peaks" at its size. VmHWM in /proc/PID/status is the child's own
high-water mark; it is read every few milliseconds until the child exits (the last sample is its peak).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.harness import _SCRUBBED


def _hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_with_peak_rss(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 300
) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run `argv` (environment as the harness gives it); the result and its peak RSS in KiB."""
    environ = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    environ.update(env or {})
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err, text=True, env=environ
        )
        deadline = time.monotonic() + timeout
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _hwm_kib(proc.pid))
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise TimeoutError(f"{argv[0]} still running after {timeout} s")
            time.sleep(0.005)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(list(argv), proc.returncode, out.read(), err.read()), peak
