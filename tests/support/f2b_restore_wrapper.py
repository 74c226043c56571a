#!/usr/bin/env python3
"""A `[fail2ban] command` that shows fail2ban mid-restore: the real fail2ban-client, with some bans hidden.

Usage: f2b_restore_wrapper.py CONTROL ARGS...  where CONTROL is a JSON file
  {"command": ["fail2ban-client", "-c", DIR], "hide": ["45.155.205.1", ...], "calls": N, "seen": {}}
Every call runs `command + ARGS` and passes its output and exit code through. The first N answers to
`get JAIL banip --with-time` of each jail (counted in "seen", per jail) leave out the lines of the `hide`
addresses: the server has not restored them yet, while its database holds them. Later answers are the real
ones (the restore has finished). No shell anywhere; stdlib only, so it runs under any python3.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    control_path, args = Path(argv[1]), argv[2:]
    command = json.loads(control_path.read_text())["command"]
    real = subprocess.run(
        [*command, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    out = real.stdout
    if len(args) == 4 and args[0] == "get" and args[2:] == ["banip", "--with-time"] and real.returncode == 0:
        jail = args[1]
        # reconcile reads several jails at once: the count of each is read and written under one lock
        with open(control_path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            control = json.loads(control_path.read_text())
            seen = control["seen"].get(jail, 0)
            if seen < control["calls"]:
                hidden = set(control["hide"])
                kept = [line for line in out.splitlines() if line.split(" \t")[0] not in hidden]
                out = "\n".join(kept) + "\n"  # an empty jail prints one empty line, as fail2ban does
            control["seen"][jail] = seen + 1
            tmp = control_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(control))
            os.replace(tmp, control_path)
    sys.stdout.write(out)
    sys.stderr.write(real.stderr)
    return real.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))
