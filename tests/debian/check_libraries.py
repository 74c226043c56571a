"""Before `make test-unit-debian` runs the unit tests: each runtime library is imported from Debian's
package (under /usr/lib/python3/dist-packages), at exactly the version tests/debian/libraries.txt names,
on Debian's python3. Otherwise the run would prove nothing about Debian 12 and must stop.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys
from pathlib import Path

PINS = Path(__file__).with_name("libraries.txt")
IMPORT_NAMES = {"python-dateutil": "dateutil", "prometheus-client": "prometheus_client"}
DEBIAN = "/usr/lib/python3/dist-packages/"


def main() -> int:
    problems = []
    if sys.base_prefix != "/usr":
        problems.append(f"not Debian's python3 (/usr/bin/python3): {sys.base_prefix}")
    for line in PINS.read_text().splitlines():
        if not (pin := re.fullmatch(r"([\w-]+)==([\w.]+)", line.strip())):
            continue
        name, version = pin.groups()
        module = importlib.import_module(IMPORT_NAMES.get(name, name))
        where = str(Path(module.__file__ or "").resolve())
        installed = importlib.metadata.version(name)
        print(f"{name} {installed} from {where}")
        if not where.startswith(DEBIAN):
            problems.append(f"{name} is imported from {where}, not from Debian's package ({DEBIAN})")
        if installed != version:
            problems.append(f"{name} is {installed}, not Debian 12's {version}")
    for problem in problems:
        print(f"check_libraries: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
