"""debian/ builds the package from the repository's own files: one version, the dependencies pyproject.toml
declares (as Debian 12's packages, from the versions it ships), and cron/'s files rather than copies.
The build itself (`make deb`, lintian) and the installed package (`make test-deb`) are tested in CI."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from reconcile import __version__

REPO = Path(__file__).resolve().parents[2]
DEBIAN = REPO / "debian"
PACKAGE = "fail2ban-cloudflare-reconcile"
# pyproject's distribution name -> Debian 12's package of it
DEBIAN_NAMES = {
    "requests": "python3-requests",
    "python-dateutil": "python3-dateutil",
    "tabulate": "python3-tabulate",
    "prometheus-client": "python3-prometheus-client",
}


def control() -> list[dict[str, str]]:
    """debian/control's paragraphs, continuation lines joined."""
    paragraphs = []
    for block in (DEBIAN / "control").read_text().strip().split("\n\n"):
        fields: dict[str, str] = {}
        name = ""
        for line in block.splitlines():
            if line[:1].isspace():
                fields[name] += "\n" + line.strip()
            else:
                name, _, value = line.partition(":")
                fields[name] = value.strip()
        paragraphs.append(fields)
    return paragraphs


def relations(value: str) -> dict[str, str]:
    """'a (>= 1), b, ${x:Depends}' -> {'a': '>= 1', 'b': ''} (substitution variables left out)."""
    found = {}
    for item in re.split(r"[,\n]", value):
        item = item.strip()
        if item and not item.startswith("${"):
            match = re.fullmatch(r"([a-z0-9.+-]+)(?: \(([^)]*)\))?", item)
            assert match, item
            found[match.group(1)] = match.group(2) or ""
    return found


def test_one_version_in_the_changelog_and_the_package() -> None:
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    match = re.fullmatch(rf"{PACKAGE} \(([^)]+)\) [a-z-]+; urgency=\w+", first)
    assert match, first
    assert match.group(1) == __version__  # native: no Debian revision
    assert (DEBIAN / "source" / "format").read_text().strip() == "3.0 (native)"
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["dynamic"] == ["version"] and "version" not in pyproject["project"]
    assert pyproject["tool"]["hatch"]["version"]["path"] == "reconcile/__init__.py"
    rules = (DEBIAN / "rules").read_text()
    assert 'test "$(DEB_VERSION)" = "$(VERSION)"' in rules  # and the build refuses two versions


def test_depends_are_debians_packages_of_what_pyproject_requires() -> None:
    source, binary = control()
    assert binary["Package"] == PACKAGE and binary["Architecture"] == "all"
    assert relations(binary["Recommends"]) == {"fail2ban": ""}
    depends = relations(binary["Depends"])
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = dict(
        line.split("==")
        for line in (REPO / "tests" / "debian" / "libraries.txt").read_text().splitlines()
        if "==" in line
    )
    required = {}
    for requirement in pyproject["project"]["dependencies"]:
        match = re.fullmatch(r"([\w-]+)>=([\w.]+)", requirement)
        assert match, requirement
        required[match.group(1)] = match.group(2)
    # Each lower bound is Debian 12's version, which make test-unit-debian tests against.
    assert required == pins
    python = pyproject["project"]["requires-python"]
    assert depends == {
        "python3": python.replace(">=", ">= "),  # pyproject's requires-python, which dh_python3 leaves out
        **{DEBIAN_NAMES[name]: f">= {version}" for name, version in required.items()},
    }
    assert "${python3:Depends}" in binary["Depends"] and "${misc:Depends}" in binary["Depends"]
    build = relations(source["Build-Depends"])
    assert {"dh-python", "pybuild-plugin-pyproject", "python3-all", "python3-hatchling"} <= set(build)
    assert build["debhelper-compat"] == "= 13"
    backend = pyproject["build-system"]["requires"][0]
    assert backend.startswith("hatchling")  # Debian 12's python3-hatchling builds it


def test_the_shipped_files_come_from_cron_not_from_copies() -> None:
    rules = (DEBIAN / "rules").read_text()
    for name in (
        "reconcile.service",
        "reconcile.timer",
        "reconcile.cron",
        "action.d/cloudflare-reconcile.conf",
        "action.d/cloudflare-reconcile-kick.conf",
        "jail.d/cloudflare-reconcile.local",
    ):
        assert f"cron/{name}" in rules, name
    for name in (DEBIAN / "examples").read_text().split():
        assert (REPO / name).is_file(), name
    assert (DEBIAN / "manpages").read_text().split() == ["docs/reconcile.8"]
    shipped = {path.read_bytes() for path in (REPO / "cron").rglob("*") if path.is_file()}
    shipped.add((REPO / "docs" / "reconcile.8").read_bytes())
    for path in DEBIAN.rglob("*"):
        if path.is_file():
            assert path.read_bytes() not in shipped, f"{path} copies a file of cron/ or docs/"


def test_the_maintainer_scripts_start_nothing() -> None:
    rules = (DEBIAN / "rules").read_text()
    assert "dh_installsystemd --no-enable --no-start" in rules
    postinst = (DEBIAN / "postinst").read_text()
    assert "systemctl enable --now reconcile.timer" in postinst and "reconcile --check" in postinst
    assert "deb-systemd-invoke" not in postinst and "systemctl start" not in postinst
    prerm = (DEBIAN / "prerm").read_text()
    assert 'if [ "$1" = "remove" ]' in prerm and "stop reconcile.timer reconcile.service" in prerm
    postrm = (DEBIAN / "postrm").read_text()
    assert "rm -rf /var/cache/reconcile /run/reconcile" in postrm and '[ "$1" = "purge" ]' in postrm
    for script in ("postinst", "prerm", "postrm"):
        assert "#DEBHELPER#" in (DEBIAN / script).read_text(), script
