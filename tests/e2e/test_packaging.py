"""`pip install .` gives the distribution fail2ban-cloudflare-reconcile with the command `reconcile`, and
the build backend (hatchling) has nothing to warn about.

Offline and fast: the wheel is built by pip with the dev venv's own hatchling (no build isolation, so no
download), from a copy of the source (a build writes build/ and *.egg-info next to pyproject.toml), then
installed without dependencies into a fresh venv that has no pip of its own (this venv's pip drives it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from reconcile import __version__

REPO = Path(__file__).resolve().parents[2]
DISTRIBUTION = "fail2ban-cloudflare-reconcile"
# What a backend says when the metadata uses a form it is dropping (setuptools did of the license table).
WARNINGS = ("Warning", "warning:", "deprecated")


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300, env=env
    )


def build_wheel(out: Path) -> tuple[Path, str]:
    """A real wheel of this source tree, offline; and everything the build printed."""
    src = out / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "reconcile", src / "reconcile", ignore=shutil.ignore_patterns("__pycache__"))
    dist = out / "dist"
    built = pip("wheel", "-v", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(src))
    output = built.stdout + built.stderr
    assert built.returncode == 0, output
    (wheel,) = dist.glob("*.whl")
    return wheel, output


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return build_wheel(tmp_path_factory.mktemp("packaging"))


def test_the_build_has_no_backend_warning(wheel):
    _, output = wheel
    # pip -v shows what the backend printed (hatchling prints nothing unless it has something to say).
    assert "Running command Building wheel for fail2ban-cloudflare-reconcile" in output
    found = [line for line in output.splitlines() if any(w in line for w in WARNINGS)]
    assert not found, "\n".join(found)


def test_the_wheel_is_the_distribution_with_its_license_and_command(wheel):
    path, _ = wheel
    assert path.name == f"fail2ban_cloudflare_reconcile-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        info = f"fail2ban_cloudflare_reconcile-{__version__}.dist-info"
        metadata = archive.read(f"{info}/METADATA").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert f"Name: {DISTRIBUTION}\n" in metadata
    assert "License-Expression: MIT\n" in metadata and "License: " not in metadata
    assert "reconcile = reconcile.cli:run" in entry_points
    # The import package only: no tests, no top-level strays.
    assert {n.split("/")[0] for n in names} == {"reconcile", info}
    assert "reconcile/cli.py" in names and "reconcile/core/ranges.py" in names


def test_installed_into_a_fresh_venv_it_gives_the_reconcile_command(wheel, tmp_path):
    path, _ = wheel
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    installed = pip("--python", str(python), "install", "--no-deps", "--no-index", str(path))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # No dependency is installed here, and --version needs none: it imports only the command line.
    # cwd: not the source tree, whose *.egg-info (from `make venv`) would answer the metadata question.
    version = subprocess.run(
        [str(venv / "bin" / "reconcile"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert version.returncode == 0 and version.stdout == f"reconcile {__version__}\n", version
    probe = (
        "import importlib.metadata as m\n"
        f"d = m.distribution({DISTRIBUTION!r})\n"
        "print(d.metadata['Name'], d.version, [e.value for e in d.entry_points if e.name == 'reconcile'])\n"
    )
    shown = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, check=True, timeout=60, cwd=tmp_path
    )
    assert shown.stdout.split(" ", 2) == [DISTRIBUTION, __version__, "['reconcile.cli:run']\n"]


def test_the_build_backend_understands_an_spdx_license():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert meta["project"]["name"] == DISTRIBUTION
    assert meta["project"]["license"] == "MIT"
    # Debian 12's hatchling (python3-hatchling 1.12.2, which debian/ builds with) reads an SPDX string;
    # Debian 12's setuptools (66) refuses it, which is why the backend is not setuptools.
    (requirement,) = meta["build-system"]["requires"]
    assert requirement.replace(" ", "") == "hatchling>=1.12.2"
    assert meta["build-system"]["build-backend"] == "hatchling.build"
    assert meta["project"]["scripts"] == {"reconcile": "reconcile.cli:run"}
