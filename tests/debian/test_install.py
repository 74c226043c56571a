"""The Debian package, installed as an operator installs it: `apt install ./…deb` on a fresh Debian 12 root
made from Debian's packages (mmdebstrap) with fail2ban; then what the operator does next, and runs against
the Cloudflare emulator and a bulk-whois server on 127.0.0.1 (a chroot shares this machine's network);
the installed units checked by systemd-analyze, the page by man; `apt purge`, after which nothing of ours
is left but the files the operator wrote.

`make test-deb` runs it (as root, with Debian's mirrors reachable; it builds the package first): about two
minutes, most of it making the root, so `make test` does not. The steps share one root and run in order;
every command and its output goes to stdout (pytest -s) and to dist/install-test-transcript.txt.
INSTALL_TEST_BASE=/some/base.tar reuses (or, when missing, keeps) the fresh root as a tarball, to iterate.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reconcile import __version__
from tests.support.cf_emulator import TOKEN, ZONE_ID, CloudflareEmulator
from tests.support.whois_server import WhoisServer

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "fail2ban-cloudflare-reconcile"
DEB = REPO / "dist" / f"{PACKAGE}_{__version__}_all.deb"
TRANSCRIPT = REPO / "dist" / "install-test-transcript.txt"
SUITE = "bookworm"
BANNED = "45.155.205.9"
HOST_ID = "install-test"
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root", "TERM": "dumb"}
# The files the operator writes (the README's steps), which `apt purge` must leave alone.
OPERATOR_FILES = {
    "/etc/cloudflare",
    "/etc/cloudflare/API_TOKEN",
    "/etc/fail2ban/cloudflare-reconcile.toml",
    "/etc/fail2ban/jail.d/install-test.local",
    "/var/log/auth.log",
}
# What apt, dpkg, fail2ban, systemctl and the new packages' scripts (ca-certificates, tzdata) keep or
# generate, owned by no package: not ours.
STATE = (
    "/var/lib/dpkg",
    "/var/lib/apt",
    "/var/cache/apt",
    "/var/cache/debconf",
    "/var/cache/ldconfig",
    "/var/log",
    "/var/lib/fail2ban",
    "/run/fail2ban",
    "/run/systemd",
    "/var/lib/systemd/deb-systemd-helper-enabled",
    "/var/lib/systemd/deb-systemd-helper-masked",
    "/var/lib/python",
    "/etc/ld.so.cache",
    "/etc/ssl/certs",
    "/etc/ca-certificates.conf",
    "/usr/local/share/ca-certificates",
    "/etc/localtime",
    "/etc/timezone",
    "/tmp",
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="make test-deb runs as root (chroot, mount)"),
    pytest.mark.timeout(900),  # the first step makes the root: about a minute, more on a loaded machine
]


@dataclass
class Chroot:
    path: Path
    lines: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)
        TRANSCRIPT.parent.mkdir(exist_ok=True)
        TRANSCRIPT.write_text("\n".join(self.lines) + "\n")

    def host(
        self, *argv: str, timeout: float = 600, show: bool = True, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """A command on this machine, in the transcript."""
        self.say(f"[host]# {shlex.join(argv)}")
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env={**os.environ, **env} if env else None
        )
        self._show(result, show)
        return result

    def run(self, command: str, timeout: float = 600, show: bool = True) -> subprocess.CompletedProcess[str]:
        """A shell command inside the root, with a clean environment, in the transcript (its output too,
        unless `show` is false: a listing the test reads, too long to be worth reading)."""
        self.say(f"[chroot]# {command}")
        result = subprocess.run(
            ["chroot", str(self.path), "/bin/sh", "-c", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=CHROOT_ENV,
        )
        self._show(result, show)
        return result

    def _show(self, result: subprocess.CompletedProcess[str], show: bool = True) -> None:
        output = (result.stdout + result.stderr).rstrip()
        if output and show:
            self.say(output)
        elif output:
            self.say(f"({len(output.splitlines())} lines, not shown)")
        self.say(f"(exit {result.returncode})")

    def at(self, path: str) -> Path:
        return self.path / path.lstrip("/")

    def files(self) -> set[str]:
        """Every path in the root (not /proc, /sys, /dev)."""
        found = set()
        for top, dirs, names in os.walk(self.path):
            rel = "/" + os.path.relpath(top, self.path)
            if rel in ("/proc", "/sys", "/dev"):
                dirs.clear()
                continue
            for name in dirs + names:
                found.add(os.path.normpath(f"{rel}/{name}"))
        return found

    def step(self, name: str, started: float) -> None:
        self.seconds[name] = time.monotonic() - started
        self.say(f"--- {name}: {self.seconds[name]:.1f} s")


def make_root(chroot: Chroot) -> None:
    base = os.environ.get("INSTALL_TEST_BASE")
    if base and Path(base).exists():
        chroot.host("tar", "-xf", base, "-C", str(chroot.path))
        return
    # Debian's packages only: mmdebstrap's default mirrors for a stable suite (with its updates and
    # security). Package lists are kept: the operator's apt has them too.
    result = chroot.host(
        "mmdebstrap",
        "--variant=apt",
        "--include=fail2ban,systemd",
        "--skip=cleanup/apt/lists",
        "--quiet",
        SUITE,
        str(chroot.path),
    )
    assert result.returncode == 0
    if base:
        chroot.host("tar", "-cf", base, "-C", str(chroot.path), ".")


@pytest.fixture(scope="module")
def chroot() -> Iterator[Chroot]:
    assert DEB.is_file(), f"{DEB}: run make deb first (make test-deb does)"
    shutil.which("mmdebstrap") or pytest.fail("mmdebstrap is missing (make test-deb installs it)")
    path = Path(tempfile.mkdtemp(prefix="reconcile-install-", dir="/var/tmp"))
    made = Chroot(path)
    TRANSCRIPT.unlink(missing_ok=True)
    started = time.monotonic()
    proc = path / "proc"
    try:
        make_root(made)
        made.step("a fresh Debian 12 root with fail2ban", started)
        subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True, timeout=60)
        yield made
    finally:
        pid = path / "run/fail2ban/fail2ban.pid"
        if pid.exists():  # a step failed with the server running: stop the one this test started
            subprocess.run(["chroot", str(path), "fail2ban-client", "stop"], timeout=60, env=CHROOT_ENV)
        subprocess.run(["umount", str(proc)], timeout=60)
        # --one-file-system: never into a mount that is still there
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], timeout=600)
        total = sum(made.seconds.values())
        made.say(f"--- total: {total:.1f} s ({', '.join(f'{k} {v:.0f} s' for k, v in made.seconds.items())})")


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[CloudflareEmulator, WhoisServer]]:
    whois = WhoisServer().start()
    with CloudflareEmulator() as cf:
        yield cf, whois
    whois.stop()


@pytest.fixture(scope="module")
def before(chroot: Chroot) -> set[str]:
    """The fresh root's paths, before the package."""
    return chroot.files()


def test_apt_installs_the_package_and_starts_nothing(chroot: Chroot, before: set[str]) -> None:
    started = time.monotonic()
    shutil.copy(DEB, chroot.at(f"/tmp/{DEB.name}"))
    result = chroot.run(
        f"DEBIAN_FRONTEND=noninteractive apt-get -o Dpkg::Use-Pty=0 install -y ./tmp/{DEB.name}"
    )
    assert result.returncode == 0
    chroot.at(f"/tmp/{DEB.name}").unlink()  # the operator's download, not the package's
    assert "nothing runs until it is configured" in result.stdout  # the postinst says how to start
    assert "systemctl enable --now reconcile.timer" in result.stdout
    status = chroot.run(f"dpkg-query -W -f '${{Status}} ${{Version}}\\n' {PACKAGE}")
    assert status.stdout == f"install ok installed {__version__}\n"
    # Debian 12's own libraries, at the versions the unit tests ran against (make test-unit-debian).
    libs = chroot.run(
        "dpkg-query -W -f '${Package} ${Version}\\n' python3-requests python3-dateutil python3-tabulate "
        "python3-prometheus-client"
    )
    assert libs.returncode == 0 and "python3-requests 2.28.1" in libs.stdout
    # lexists: the link names /lib/..., which resolves on this machine, not in the root
    assert not os.path.lexists(chroot.at("/etc/systemd/system/timers.target.wants/reconcile.timer"))
    conffiles = chroot.run(f"dpkg-query -W -f '${{Conffiles}}\\n' {PACKAGE}").stdout
    for path in (
        "/etc/fail2ban/action.d/cloudflare-reconcile.conf",
        "/etc/fail2ban/action.d/cloudflare-reconcile-kick.conf",
        "/etc/fail2ban/jail.d/cloudflare-reconcile.local.example",
        f"/etc/cron.d/{PACKAGE}",
    ):
        assert f" {path} " in conffiles, path
    chroot.step("apt install", started)


def test_version(chroot: Chroot) -> None:
    result = chroot.run("reconcile --version && python3 -m reconcile --version")
    assert result.returncode == 0 and result.stdout == f"reconcile {__version__}\n" * 2


def test_check_before_configuring_says_what_is_missing(chroot: Chroot) -> None:
    result = chroot.run("reconcile --check")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "/etc/cloudflare/ZONE_ID" in result.stderr  # no configuration: the older scripts' zone file


def configure(chroot: Chroot, cf: CloudflareEmulator, whois: WhoisServer) -> None:
    """The README's steps: the token (root only), the configuration, a jail that uses the action."""
    config = "\n".join(
        [
            "[cloudflare]",
            f'api_base_url = "{cf.base_url}"',
            f'zone_ids = ["{ZONE_ID}"]',
            "[policy]",
            f'host_id = "{HOST_ID}"',
            "[enrich]",
            "asn = true",
            f'whois_server = "{whois.server}"',
            "",
        ]
    )
    jail = "\n".join(
        [
            "[sshd]",
            "enabled = true",
            "backend = polling",
            "logpath = /var/log/auth.log",
            "action = cloudflare-reconcile",
            "",
        ]
    )
    chroot.run(
        "install -d -m 700 /etc/cloudflare && (umask 077; cat > /etc/cloudflare/API_TOKEN) <<'EOF'\n"
        f"{TOKEN}\nEOF\n"
        f"cat > /etc/fail2ban/cloudflare-reconcile.toml <<'EOF'\n{config}EOF\n"
        f"cat > /etc/fail2ban/jail.d/install-test.local <<'EOF'\n{jail}EOF\n"
        "touch /var/log/auth.log"
    )


def test_check_against_the_emulator(chroot: Chroot, servers: tuple[CloudflareEmulator, WhoisServer]) -> None:
    started = time.monotonic()
    cf, whois = servers
    configure(chroot, cf, whois)
    # fail2ban as the operator runs it, with the jail using the packaged (no-op) action.
    assert chroot.run("fail2ban-client -x start && fail2ban-client status sshd").returncode == 0
    assert chroot.run(f"fail2ban-client set sshd banip {BANNED}").returncode == 0
    table = chroot.run("reconcile --check")
    assert table.returncode == 0, table.stdout
    found = json.loads(chroot.run("reconcile --check --format json").stdout)
    status = {check["name"]: check["status"] for check in found["checks"]}
    assert found["ok"] and "fail" not in status.values()
    for name in ("config", "fail2ban", "fail2ban actions", "token", "zone rules", "ASN cache path"):
        assert status[name] == "ok", (name, status)
    # No systemd runs in a chroot: the packaged cron.d file is what would run it, now configured.
    assert status["schedule"] == "ok" and f"/etc/cron.d/{PACKAGE} runs reconcile" in table.stdout
    assert cf.writes() == []  # --check changes nothing anywhere
    assert not chroot.at("/run/reconcile").exists() and not chroot.at("/var/cache/reconcile").exists()
    chroot.step("configure, fail2ban, reconcile --check", started)


def test_report_then_a_run_writes_the_ban(
    chroot: Chroot, servers: tuple[CloudflareEmulator, WhoisServer]
) -> None:
    cf, _ = servers
    report = chroot.run("reconcile --report --jail sshd")
    assert report.returncode == 0 and BANNED in report.stdout and "add" in report.stdout
    assert cf.writes() == []
    run = chroot.run("reconcile")
    assert run.returncode == 0, run.stderr
    (rule,) = [r for r in cf.rules() if r["configuration"]["value"] == BANNED]
    assert rule["mode"] == "block" and f"host={HOST_ID}" in rule["notes"] and "jail=sshd" in rule["notes"]
    # What the run made for itself, which purge must take away.
    assert chroot.at("/run/reconcile/lock").exists() and chroot.at("/var/cache/reconcile/asn.json").exists()


def test_the_installed_units_pass_systemd_analyze(chroot: Chroot) -> None:
    units = "/lib/systemd/system/reconcile.service /lib/systemd/system/reconcile.timer"
    verify = chroot.run(f"systemd-analyze verify --man=no {units}")
    assert verify.returncode == 0 and verify.stdout + verify.stderr == ""
    security = chroot.run(
        "systemd-analyze security --offline=yes --threshold=20 reconcile.service | tail -n 1"
    )
    exposure = re.search(r"Overall exposure level for reconcile.service: ([\d.]+)", security.stdout)
    assert security.returncode == 0 and exposure is not None and float(exposure.group(1)) <= 2.0


def test_man_shows_the_installed_page(chroot: Chroot) -> None:
    page = chroot.at("/usr/share/man/man8/reconcile.8.gz")
    result = chroot.host("man", "--warnings", "-l", str(page), show=False, MANWIDTH="80", LC_ALL="C.UTF-8")
    assert result.returncode == 0 and result.stderr == ""
    assert "reconcile - keep Cloudflare's edge in step with fail2ban's bans" in result.stdout
    chroot.say("\n".join(result.stdout.splitlines()[:9]) + "\n[...]")


def test_purge_leaves_nothing_but_the_operators_files(chroot: Chroot, before: set[str]) -> None:
    started = time.monotonic()
    ours = chroot.run(f"dpkg-query -L {PACKAGE}", show=False).stdout.split()
    # The operator enabled the timer: purge must take the link away too.
    assert chroot.run("systemctl enable reconcile.timer").returncode == 0
    assert chroot.at("/etc/systemd/system/timers.target.wants/reconcile.timer").is_symlink()
    purge = chroot.run(f"DEBIAN_FRONTEND=noninteractive apt-get -o Dpkg::Use-Pty=0 purge -y {PACKAGE}")
    assert purge.returncode == 0
    # The jail still names the action, now gone: the postrm says so.
    assert "still names the action" in purge.stderr
    assert chroot.run("fail2ban-client stop").returncode == 0
    after = chroot.files()
    shared = {
        "/etc",
        "/etc/cron.d",
        "/etc/fail2ban",
        "/etc/fail2ban/action.d",
        "/etc/fail2ban/jail.d",
        "/lib",
    }
    left = sorted(p for p in ours if p not in shared and os.path.lexists(chroot.at(p)) and p in after)
    leftover_dirs = [p for p in left if chroot.at(p).is_dir() and not chroot.at(p).is_symlink()]
    # Directories other packages also use (/usr/bin, /lib/systemd/system, ...) stay; no file of ours does.
    assert [p for p in left if p not in leftover_dirs] == []
    for path in leftover_dirs:
        assert not path.startswith(
            ("/usr/lib/python3/dist-packages/reconcile", f"/usr/share/doc/{PACKAGE}")
        ), path
    named = sorted(p for p in after if "reconcile" in p.rsplit("/", 1)[-1])
    assert named == ["/etc/fail2ban/cloudflare-reconcile.toml"], named
    # Every new path is the operator's, apt's or fail2ban's state, or a file of another (new) package.
    owned = set(
        chroot.run("dpkg-query -W -f '${Package}\\n' | xargs dpkg-query -L", show=False).stdout.split()
    )
    new = sorted(
        p
        for p in after - before
        if p not in OPERATOR_FILES
        and p not in owned
        and not any(p == d or p.startswith(f"{d}/") for d in STATE)
        and "/__pycache__" not in p  # compiled by the new python3-* packages' postinst
    )
    chroot.say("new paths after purge, owned by no package and no one's state: " + (", ".join(new) or "none"))
    assert new == []
    chroot.step("enable the timer, apt purge, look for what is left", started)
