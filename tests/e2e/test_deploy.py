"""What an operator deploys, as shipped in cron/: systemd units, the fail2ban actions and jail snippet, the
example configuration, the cron drop-in and install.sh (run into a temporary root); and the metrics textfile.

Real components throughout: systemd-analyze, a private fail2ban-server, the installed command against the
Cloudflare emulator, prometheus_client's own parser.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import itertools
import os
import re
import shutil
import site
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconcile import __version__, metrics, run
from reconcile import config as config_mod
from reconcile.cloudflare.credentials import Credentials
from reconcile.core.notes import Lease, format_note
from reconcile.errors import EXIT_OK, EXIT_UNSAFE
from tests.support.cf_emulator import TOKEN, ZONE_ID, CloudflareEmulator
from tests.support.f2b_server import F2B, require_fail2ban
from tests.support.harness import toml_value

REPO = Path(__file__).resolve().parents[2]
CRON = REPO / "cron"
COMMAND = "/usr/local/bin/reconcile"  # where install.sh puts the command (PREFIX=/usr/local)
VENV = "/opt/reconcile"
SYSTEMD_ANALYZE = "systemd-analyze"
KICK = "systemctl start --no-block reconcile.service"


# ----------------------------------------------------------------------------------------- helpers


def unit_settings(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as section -> key -> values (systemd allows a key more than once; configparser doesn't)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def set_settings(text: str, values: Mapping[tuple[str, str], Any]) -> str:
    """Uncomment "#key = default" lines of the example, with new values; every key must be found."""
    out, section, done = [], "", set()
    for line in text.splitlines():
        if header := re.fullmatch(r"\[(\w+)\]", line):
            section = header.group(1)
        elif (setting := re.fullmatch(r"#(\w+) = (.+)", line)) and (section, setting.group(1)) in values:
            key = setting.group(1)
            line = f"{key} = {toml_value(values[section, key])}"
            done.add((section, key))
        out.append(line)
    assert done == set(values), f"not in the example: {set(values) - done}"
    return "\n".join(out) + "\n"


def build_wheel(src: Path, out: Path) -> Path:
    """A pure-Python wheel of the source tree, made with the stdlib.

    Tests run offline, and the setuptools a fresh venv ships cannot build a wheel without downloading
    `wheel`; install.sh itself builds from source with pip (PACKAGE defaults to the source tree).
    """
    project = tomllib.loads((src / "pyproject.toml").read_text())["project"]
    init = (src / "reconcile" / "__init__.py").read_text()
    version = re.search(r'__version__ = "([^"]+)"', init)
    assert version is not None
    # Wheel file and dist-info names use the normalised distribution name (PEP 427: `-` becomes `_`).
    dist = f"{re.sub(r'[-_.]+', '_', project['name'])}-{version.group(1)}"
    # every module, those of the subpackages (core/, fail2ban/, cloudflare/, ...) too
    files = {
        p.relative_to(src).as_posix(): p.read_bytes()
        for p in sorted((src / "reconcile").rglob("*.py"))
        if "__pycache__" not in p.parts
    }
    metadata = [f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {version.group(1)}"]
    metadata += [f"Requires-Dist: {dep}" for dep in project["dependencies"]]
    scripts = "".join(f"{name} = {target}\n" for name, target in project["scripts"].items())
    files[f"{dist}.dist-info/METADATA"] = ("\n".join(metadata) + "\n").encode()
    files[f"{dist}.dist-info/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{dist}.dist-info/entry_points.txt"] = f"[console_scripts]\n{scripts}".encode()

    def digest(data: bytes) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

    record = "".join(f"{name},sha256={digest(data)},{len(data)}\n" for name, data in files.items())
    files[f"{dist}.dist-info/RECORD"] = (record + f"{dist}.dist-info/RECORD,,\n").encode()
    wheel = out / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel


def run_install(root: Path, wheel: Path, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["sh", str(CRON / "install.sh")],
        env={
            **os.environ,
            "DESTDIR": str(root),
            "PACKAGE": str(wheel),
            "PIP_ARGS": "--no-index --no-deps",
            # The interpreter this test venv was made from: it can make venvs and matches the .pth below.
            "PYTHON": getattr(sys, "_base_executable", sys.executable),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def venv_site_packages(root: Path) -> Path:
    found = list((root / VENV.lstrip("/")).glob("lib/python3*/site-packages"))
    assert len(found) == 1, found
    return found[0]


def give_dependencies(root: Path) -> None:
    """The installed venv got the package without its dependencies (no network in tests): borrow ours."""
    (venv_site_packages(root) / "zz-test-dependencies.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n"
    )


def in_root(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def installed_command(root: Path) -> list[str]:
    """argv running the installed command; the venv's "#!" names /opt/reconcile, not this staging root."""
    return [str(in_root(root, f"{VENV}/bin/python")), str(in_root(root, COMMAND))]


def copy_system_units(root: Path) -> None:
    """systemd-analyze --root resolves targets (sysinit.target, …) inside the root only."""
    target = root / "usr/lib/systemd/system"
    if not target.exists():
        shutil.copytree(Path("/usr/lib/systemd/system").resolve(), target, symlinks=True)


def verify_units(root: Path, *units: Path) -> tuple[int, list[str]]:
    """systemd-analyze verify offline: exit code and every line it printed (warnings do not change rc)."""
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", f"--root={root}", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, (result.stdout + result.stderr).splitlines()


def poll(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def f2b_log(server: F2B) -> str:
    return (server.run / "fail2ban.log").read_text()


@contextmanager
def f2b_with(
    actions: Mapping[str, str], jail_local: str, server_env: Mapping[str, str] | None = None
) -> Iterator[F2B]:
    """A private fail2ban-server whose jails are configured before it starts (actions: name -> text)."""
    require_fail2ban()
    base = Path(tempfile.mkdtemp(prefix="f2b-", dir="/tmp"))
    server = F2B(base, server_env=server_env)
    try:
        server.write_config()
        for name, text in actions.items():
            (server.conf / "action.d" / f"{name}.conf").write_text(text)
        (server.conf / "jail.local").write_text(jail_local)
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base)


def action_text(name: str) -> str:
    return (CRON / "action.d" / f"{name}.conf").read_text()


# ----------------------------------------------------------------------------------------- install


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cron/install.sh run once into a temporary root, with the cron drop-in."""
    work = tmp_path_factory.mktemp("install")
    root = work / "root"
    run_install(root, build_wheel(REPO, work), WITH_CRON="1")
    give_dependencies(root)
    return root


def test_install_lays_out_every_file(installed: Path) -> None:
    expected = {
        "etc/systemd/system/reconcile.service": CRON / "reconcile.service",
        "etc/systemd/system/reconcile.timer": CRON / "reconcile.timer",
        "etc/fail2ban/action.d/cloudflare-reconcile.conf": CRON / "action.d/cloudflare-reconcile.conf",
        "etc/fail2ban/action.d/cloudflare-reconcile-kick.conf": CRON
        / "action.d/cloudflare-reconcile-kick.conf",
        # fail2ban reads only *.conf and *.local in jail.d: the example changes no jail by itself
        "etc/fail2ban/jail.d/cloudflare-reconcile.local.example": CRON / "jail.d/cloudflare-reconcile.local",
        "etc/fail2ban/cloudflare-reconcile.toml": CRON / "cloudflare-reconcile.toml.example",
        "etc/cron.d/reconcile": CRON / "reconcile.cron",
    }
    for path, source in expected.items():
        assert (installed / path).read_text() == source.read_text(), path
        assert stat.S_IMODE((installed / path).stat().st_mode) == 0o644, path
    assert sorted(p.name for p in (installed / "etc/fail2ban/jail.d").iterdir()) == [
        "cloudflare-reconcile.local.example"
    ]
    assert stat.S_IMODE((installed / "etc/cloudflare").stat().st_mode) == 0o700
    # [enrich] cache_file's directory for cron runs; the lock's (/run is a tmpfs) is made by the command.
    assert stat.S_IMODE((installed / "var/cache/reconcile").stat().st_mode) == 0o700
    assert not (installed / "run").exists()
    assert not (installed / "etc/cloudflare/API_TOKEN").exists()  # the secret is the operator's to write

    link = in_root(installed, COMMAND)
    assert link.is_symlink() and not os.readlink(link).startswith("/")  # resolves in a DESTDIR tree too
    assert link.resolve() == in_root(installed, f"{VENV}/bin/reconcile")
    assert os.access(link, os.X_OK)
    # The staged venv names its final place, not the staging root.
    assert link.read_text().splitlines()[0] == f"#!{VENV}/bin/python"
    staged = [p for p in in_root(installed, VENV).rglob("*") if p.is_file() and not p.is_symlink()]
    # .pyc files record their compile-time path for tracebacks only
    leaking = [p for p in staged if p.suffix != ".pyc" and str(installed).encode() in p.read_bytes()]
    assert leaking == []


def test_installed_package_is_the_one_in_the_venv(installed: Path) -> None:
    result = subprocess.run(
        [str(in_root(installed, f"{VENV}/bin/python")), "-c", "import reconcile; print(reconcile.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(venv_site_packages(installed))


def test_installed_command_reports_against_the_emulator(
    installed: Path, f2b: F2B, cf: CloudflareEmulator, tmp_path: Path
) -> None:
    """The installed configuration, given a zone, a token and (here) the test's endpoints, runs --report."""
    f2b.ban("sshd", "1.2.3.4", "2a06:4880::1")
    cf.add_rule("zone", ZONE_ID, "ip", "5.6.7.8", notes="Fail2Ban sshd")  # an older script's rule
    token = tmp_path / "API_TOKEN"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    shipped = in_root(installed, "/etc/fail2ban/cloudflare-reconcile.toml").read_text()
    config = tmp_path / "cloudflare-reconcile.toml"
    config.write_text(
        set_settings(
            shipped,
            {
                ("fail2ban", "command"): f2b.command,
                ("cloudflare", "api_base_url"): cf.base_url,
                ("cloudflare", "api_token_file"): str(token),
                ("cloudflare", "zone_ids"): [ZONE_ID],
                ("policy", "host_id"): "web1",
                ("run", "lock_file"): str(tmp_path / "lock"),
            },
        )
    )
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("CLOUDFLARE_", "CREDENTIALS_", "JOURNAL_"))
    }
    result = subprocess.run(
        [*installed_command(installed), "--report", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == EXIT_OK, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line[:1].isdigit()}
    assert set(rows) == {"1.2.3.4", "2a06:4880::1", "5.6.7.8"}, result.stdout
    assert "add" in rows["1.2.3.4"] and "add" in rows["2a06:4880::1"]
    assert "legacy" in rows["5.6.7.8"]  # adopted as ours, expired since fail2ban no longer bans it
    assert "report: would write 2 to add" in result.stderr
    assert cf.writes() == []
    assert TOKEN not in result.stdout + result.stderr


def test_install_twice_keeps_the_configuration(tmp_path: Path) -> None:
    root = tmp_path / "root"
    wheel = build_wheel(REPO, tmp_path)
    config = in_root(root, "/etc/fail2ban/cloudflare-reconcile.toml")
    config.parent.mkdir(parents=True)
    config.write_text('[cloudflare]\nzone_ids = ["023e105f4ecef8ad9ca31a8372d0c353"]\n')  # the operator's

    first = run_install(root, wheel)
    assert config.read_text().startswith("[cloudflare]\nzone_ids")
    assert "keeping the existing /etc/fail2ban/cloudflare-reconcile.toml" in first.stdout
    action = in_root(root, "/etc/fail2ban/action.d/cloudflare-reconcile.conf")
    action.write_text("[Definition]\nactionban = curl …\n")  # a shipped file edited in place
    config.write_text(config.read_text() + "# edited again\n")
    edited = config.read_text()

    second = run_install(root, wheel)
    assert config.read_text() == edited
    assert action.read_text() == action_text("cloudflare-reconcile")  # shipped files are ours: restored
    assert not in_root(root, "/etc/cron.d").exists()  # the timer is the default; cron only with WITH_CRON=1
    assert "systemd is not running here" in second.stdout
    give_dependencies(root)
    version = subprocess.run(
        [*installed_command(root), "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0 and version.stdout.startswith("reconcile "), version.stderr


# ----------------------------------------------------------------------------------------- systemd


def test_units_pass_systemd_analyze_verify(installed: Path) -> None:
    copy_system_units(installed)
    units = [installed / "etc/systemd/system" / name for name in ("reconcile.service", "reconcile.timer")]
    assert verify_units(installed, *units) == (0, [])


@pytest.mark.parametrize(
    ("directive", "broken"),
    [
        ("ProtectSystem=strict", "ProtectSystem=strictest"),
        ("Type=oneshot", "Type=oneshoot"),
        ("NoNewPrivileges=yes", "NoNewPrivilege=yes"),
        (f"ExecStart={COMMAND}", "ExecStart=/usr/local/bin/reconcil"),
        ("RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "RestrictAddressFamilies=AF_UNIX AF_INTE"),
        ("RuntimeDirectory=reconcile", "RuntimeDirectory=/run/reconcile"),
        ("RuntimeDirectoryMode=0700", "RuntimeDirectoryMode=0o700"),
        ("CacheDirectory=reconcile", "CacheDirectory=../reconcile"),
    ],
)
def test_verify_catches_a_broken_unit(tmp_path: Path, directive: str, broken: str) -> None:
    """The check above is real: one wrong directive in the shipped unit makes it fail."""
    copy_system_units(tmp_path)
    executable = in_root(tmp_path, COMMAND)
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    unit_dir = tmp_path / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    text = (CRON / "reconcile.service").read_text()
    assert directive in text
    (unit_dir / "reconcile.service").write_text(text.replace(directive, broken))
    shutil.copy(CRON / "reconcile.timer", unit_dir)
    rc, lines = verify_units(tmp_path, unit_dir / "reconcile.service", unit_dir / "reconcile.timer")
    assert rc != 0 or lines, f"systemd-analyze accepted {broken}"


def test_service_hardening_exposure(installed: Path) -> None:
    copy_system_units(installed)
    result = subprocess.run(
        [
            SYSTEMD_ANALYZE,
            "security",
            "--offline=yes",
            f"--root={installed}",
            "--threshold=20",
            "reconcile.service",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    exposure = re.search(r"Overall exposure level for reconcile.service: ([\d.]+)", result.stdout)
    assert exposure is not None, result.stdout + result.stderr
    assert result.returncode == 0 and float(exposure.group(1)) <= 2.0, result.stdout


def test_timer_runs_every_two_minutes() -> None:
    timer = unit_settings(CRON / "reconcile.timer")
    assert timer["Timer"]["Persistent"] == ["true"]
    assert timer["Install"]["WantedBy"] == ["timers.target"]
    delay = timer["Timer"]["RandomizedDelaySec"][0]
    assert delay.endswith("s") and 0 < int(delay[:-1]) < 60
    (calendar,) = timer["Timer"]["OnCalendar"]
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "calendar", "--iterations=4", calendar],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TZ": "UTC"},  # no daylight-saving jump between the iterations
    )
    assert result.returncode == 0, result.stderr
    times = [
        datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
        for m in re.finditer(r"(?:Next elapse|Iter\S* #\d+): \w+ (\S+ \S+)", result.stdout)
    ]
    assert len(times) == 4, result.stdout
    assert {b - a for a, b in itertools.pairwise(times)} == {timedelta(minutes=2)}


# ----------------------------------------------------------------------------------------- cron


def test_cron_dropin_parses_and_names_an_installed_command(installed: Path) -> None:
    path = installed / "etc/cron.d/reconcile"
    assert "." not in path.name  # Debian's cron skips /etc/cron.d files whose names have a dot
    text = path.read_text()
    assert text.endswith("\n")  # cron ignores a last line without a newline
    env, jobs = {}, []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if re.fullmatch(r"[A-Z_]+=.*", line):
            name, _, value = line.partition("=")
            env[name] = value
        else:
            jobs.append(line.split())
    assert len(jobs) == 1, jobs
    minute, hour, day, month, weekday, user, *command = jobs[0]
    field = re.compile(r"(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*")
    for value in (minute, hour, day, month, weekday):
        assert field.fullmatch(value), value
    assert minute == "*/2" and (hour, day, month, weekday) == ("*", "*", "*", "*")
    assert user == "root"
    assert " ".join(command) == CRON_COMMAND
    assert os.access(in_root(installed, COMMAND), os.X_OK)  # exists (through the symlink) after install
    path_dirs = env["PATH"].split(":")
    assert str(Path(COMMAND).parent) in path_dirs
    fail2ban_client = shutil.which("fail2ban-client")
    assert fail2ban_client is not None and str(Path(fail2ban_client).parent) in path_dirs
    # The syslog alternative is there, commented, with the same schedule and command.
    assert f"#*/2 * * * * root {CRON_COMMAND} 2>&1 | logger -t reconcile" in text


# What the job runs: nothing where systemd runs (the timer does), nothing before the configuration file
# exists, nothing once the command is gone (the package removed, the cron file kept as a conffile).
CRON_COMMAND = (
    f"[ -x {COMMAND} ] && [ ! -d /run/systemd/system ] && [ -e {config_mod.DEFAULT_PATH} ] && {COMMAND} -q"
)


@pytest.mark.parametrize(
    ("systemd", "configured", "command", "runs"),
    [
        (False, True, True, True),
        (True, True, True, False),
        (False, False, True, False),
        (False, True, False, False),
    ],
)
def test_cron_job_stands_aside(tmp_path: Path, systemd: bool, configured: bool, command: bool, runs: bool):
    """The shipped line, run by sh as cron would, with its three paths moved into a temporary root."""
    root = tmp_path / "root"
    ran = tmp_path / "ran"
    if systemd:
        (root / "run/systemd/system").mkdir(parents=True)
    if configured:
        in_root(root, str(config_mod.DEFAULT_PATH)).parent.mkdir(parents=True)
        in_root(root, str(config_mod.DEFAULT_PATH)).write_text("")
    if command:
        stub = in_root(root, COMMAND)
        stub.parent.mkdir(parents=True)
        stub.write_text(f'#!/bin/sh\necho "$@" > {ran}\n')
        stub.chmod(0o755)
    line = next(
        line for line in (CRON / "reconcile.cron").read_text().splitlines() if line.startswith("*/2 ")
    )
    job = line.split(" ", 6)[6]
    for path in (COMMAND, "/run/systemd/system", str(config_mod.DEFAULT_PATH)):
        assert path in job
        job = job.replace(path, str(in_root(root, path)))
    result = subprocess.run(["sh", "-c", job], capture_output=True, text=True, timeout=60)
    assert result.stdout == result.stderr == ""  # standing aside mails nothing
    assert ran.exists() is runs
    if runs:
        assert ran.read_text() == "-q\n"


# ----------------------------------------------------------------------------------------- config


# ----------------------------------------------------------------------------------------- fail2ban


def test_stub_action_loads_and_runs_nothing() -> None:
    with f2b_with(
        {"cloudflare-reconcile": action_text("cloudflare-reconcile")},
        "[sshd]\naction = cloudflare-reconcile\n",
    ) as server:
        assert server.client("get", "sshd", "actions").stdout.split("\n")[1] == "cloudflare-reconcile"
        server.client("set", "loglevel", "HEAVYDEBUG")  # logs every command an action executes
        mark = len(f2b_log(server))
        assert server.client("set", "sshd", "banip", "1.2.3.4").stdout.strip() == "1"
        assert server.client("set", "sshd", "unbanip", "1.2.3.4").returncode == 0
        assert poll(lambda: "[sshd] Unban 1.2.3.4" in f2b_log(server)[mark:])
        log = f2b_log(server)[mark:]
        assert "-- exec:" not in log  # nothing was run (see the kick test: this is how a run shows)
        assert log.count("Nothing to do") >= 2  # ban and unban were both handled, as empty commands
        assert " ERROR " not in log and "CRITICAL" not in log


def test_kick_action_starts_the_service_on_a_ban_only(tmp_path: Path) -> None:
    record = tmp_path / "systemctl.calls"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "systemctl").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {record}\n')
    (fake / "systemctl").chmod(0o755)

    def calls() -> list[str]:
        return record.read_text().splitlines() if record.exists() else []

    env = {"PATH": f"{fake}:{os.environ['PATH']}"}  # the server runs actions with its own PATH
    name = "cloudflare-reconcile-kick"
    with f2b_with({name: action_text(name)}, f"[sshd]\naction = {name}\n", server_env=env) as server:
        server.client("set", "loglevel", "HEAVYDEBUG")
        server.ban("sshd", "1.2.3.4")
        assert poll(lambda: calls() == ["start --no-block reconcile.service"]), calls()
        assert f"-- exec: {KICK}" in f2b_log(server)
        server.client("set", "sshd", "unbanip", "1.2.3.4")
        server.ban("sshd", "5.6.7.8")
        assert poll(lambda: len(calls()) == 2)
        assert "[sshd] Unban 1.2.3.4" in f2b_log(server)
        # norestored: bans restored after a restart are already at Cloudflare, no burst of starts.
        server.stop()
        server.start()
        assert poll(lambda: "[sshd] Restore Ban 5.6.7.8" in f2b_log(server))
        assert server.banned()["sshd"] == ["5.6.7.8"]
        assert calls() == ["start --no-block reconcile.service"] * 2


def test_jail_snippet_works_with_the_stock_debian_config(tmp_path: Path) -> None:
    require_fail2ban()
    conf = tmp_path / "fail2ban"
    shutil.copytree("/etc/fail2ban", conf)
    for action in ("cloudflare-reconcile", "cloudflare-reconcile-kick"):
        shutil.copy(CRON / "action.d" / f"{action}.conf", conf / "action.d")
    shutil.copy(CRON / "jail.d/cloudflare-reconcile.local", conf / "jail.d")
    dump = subprocess.run(
        ["fail2ban-client", "-c", str(conf), "-d"], capture_output=True, text=True, timeout=60
    )
    assert dump.returncode == 0, dump.stderr
    stream = [ast.literal_eval(line) for line in dump.stdout.splitlines() if line.startswith("[")]
    sshd_actions = [cmd[3] for cmd in stream if cmd[:3] == ["set", "sshd", "addaction"]]
    # the local firewall action first (Debian's banaction), then the stub
    assert len(sshd_actions) == 2 and sshd_actions[1] == "cloudflare-reconcile", sshd_actions


def test_migration_switches_the_action_without_unbanning(tmp_path: Path) -> None:
    """The deployment guide's recipe: neutralise the old action's unban, switch, restart the jail."""
    record = tmp_path / "old-action.calls"
    old = (
        "[Definition]\nactionstart =\nactionstop =\nactioncheck =\n"
        f"actionban = printf 'ban <ip>\\n' >> {record}\nactionunban = printf 'unban <ip>\\n' >> {record}\n"
    )
    stub = "cloudflare-reconcile"
    with f2b_with(
        {"cloudflare-token": old, stub: action_text(stub)}, "[sshd]\naction = noop\n cloudflare-token\n"
    ) as server:
        server.ban("sshd", "1.2.3.4", "5.6.7.8")
        assert poll(lambda: record.exists() and len(record.read_text().splitlines()) == 2)
        # 1. the old action's unban becomes a no-op (as the guide's printf writes it)
        (server.conf / "action.d/cloudflare-token.local").write_text(
            "[Definition]\nactionunban =\nactionstop =\nactionflush =\n"
        )
        assert server.client("reload").stdout.strip() == "OK"
        # 2. the jail uses the stub; 3. restart the jail (plain reload drops actions in fail2ban 1.0.2)
        (server.conf / "jail.local").write_text(f"[sshd]\naction = noop\n {stub}\n")
        server.client("reload", "--restart", "sshd")
        assert poll(lambda: "[sshd] Restore Ban 5.6.7.8" in f2b_log(server))
        assert server.client("get", "sshd", "actions").stdout.split("\n")[1] == f"noop, {stub}"
        assert sorted(server.banned()["sshd"]) == ["1.2.3.4", "5.6.7.8"]
        assert record.read_text().splitlines() == ["ban 1.2.3.4", "ban 5.6.7.8"]  # no unban ran


# ----------------------------------------------------------------------------------------- metrics


def families_of(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Parsed with prometheus_client's parser: name -> sorted labels -> value."""
    parsed: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family.name
        assert family.documentation, family.name
        samples = parsed.setdefault(family.name, {})
        for sample in family.samples:
            samples[tuple(sorted(sample.labels.items()))] = sample.value
    return parsed


def run_config(f2b: F2B, cf: CloudflareEmulator, tmp_path: Path, **extra: Any) -> config_mod.Config:
    data: dict[str, dict[str, Any]] = {
        "fail2ban": {"command": f2b.command},
        "cloudflare": {"api_base_url": cf.base_url, "zone_ids": [ZONE_ID], "requests_per_minute": 60000},
        "policy": {"host_id": "web1"},
        "run": {"lock_file": str(tmp_path / "lock")},
        "metrics": {"textfile": str(tmp_path / "reconcile.prom")},
    }
    return config_mod.from_mapping({**data, **extra}, tmp_path / "reconcile.toml")


def test_metrics_of_a_real_run(f2b: F2B, cf: CloudflareEmulator, tmp_path: Path) -> None:
    f2b.ban("sshd", "1.2.3.4", "5.6.7.8")
    f2b.ban("recidive", "1.2.3.4", "not_an_ip")
    f2b.ban("manual", "9.9.9.9")
    now = datetime.now(UTC).replace(microsecond=0)
    cf.add_rule("zone", ZONE_ID, "ip", "5.6.7.8", notes="Fail2Ban sshd")  # legacy: adopted (renewed)
    cf.add_rule("zone", ZONE_ID, "ip", "9.9.9.9", notes="")  # untagged, listed: foreign
    lease = (
        format_note("Blocked by fail2ban", Lease(("sshd",), ("web2",), now, now + timedelta(hours=1))) or ""
    )
    cf.add_rule("zone", ZONE_ID, "ip", "8.8.4.4", notes=lease)  # another host's live lease: kept
    config = run_config(f2b, cf, tmp_path)
    outcome = run.execute(config, Credentials(token=TOKEN), run.Options())
    assert outcome.exit_code == EXIT_OK

    metrics.publish(outcome, config, now)
    assert config.metrics.textfile is not None
    got = families_of(config.metrics.textfile.read_text())
    assert got["reconcile_last_run_timestamp_seconds"] == {(): now.timestamp()}
    assert got["reconcile_last_run_success"] == {(): 1} and got["reconcile_last_run_exit_code"] == {(): 0}
    assert 0 < got["reconcile_last_run_duration_seconds"][()] < 60
    assert got["reconcile_api_requests"] == {(): len(cf.requests)}
    assert got["reconcile_api_rate_limited"] == {(): 0}
    assert got["reconcile_info"] == {(("host", "web1"), ("version", __version__)): 1}
    assert got["reconcile_bans"] == {
        (("jail", "manual"),): 1,
        (("jail", "nginx-http-auth"),): 0,
        (("jail", "nginx-limit-req"),): 0,
        (("jail", "recidive"),): 2,
        (("jail", "sshd"),): 2,
    }
    assert got["reconcile_rules"] == {
        (("owner", "allow"),): 0,
        (("owner", "legacy"),): 1,
        (("owner", "others"),): 1,
        (("owner", "ours"),): 0,
        (("owner", "unknown"),): 0,
        (("owner", "untagged"),): 1,
    }
    planned = {labels[0][1]: value for labels, value in got["reconcile_changes_planned"].items()}
    assert planned == {"add": 1, "renew": 1, "expire": 0, "keep": 1, "foreign": 1, "skip": 1}
    applied = {(dict(k)["action"], dict(k)["result"]): v for k, v in got["reconcile_changes_applied"].items()}
    assert {k: v for k, v in applied.items() if v} == {
        ("add", "done"): 1,
        ("renew", "done"): 1,
    }
    assert len(applied) == 3 * 5  # every write action x every result, zeros included
    assert got["reconcile_pending_changes"] == {(): 0}


def test_metrics_of_a_refused_plan(f2b: F2B, cf: CloudflareEmulator, tmp_path: Path) -> None:
    since = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    for n in range(10):  # ten of our rules, none banned any more: expiring all is refused
        cf.add_rule(
            "zone",
            ZONE_ID,
            "ip",
            f"1.2.3.{n + 1}",
            notes=format_note("Blocked by fail2ban", Lease(("sshd",), ("web1",), since, None)) or "",
        )
    config = run_config(f2b, cf, tmp_path)
    outcome = run.execute(config, Credentials(token=TOKEN), run.Options())
    assert outcome.exit_code == EXIT_UNSAFE
    got = families_of(metrics.render(outcome, config, datetime.now(UTC)))
    assert got["reconcile_last_run_success"] == {(): 0} and got["reconcile_last_run_exit_code"] == {(): 3}
    assert got["reconcile_pending_changes"] == {(): 10}
    assert got["reconcile_changes_planned"][(("action", "expire"),)] == 10
    assert got["reconcile_changes_applied"] == {}  # nothing was attempted: no samples
    assert cf.writes() == []
