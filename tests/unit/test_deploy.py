"""What an operator deploys, as shipped in cron/: systemd units, the fail2ban actions and jail snippet, the
example configuration, the cron drop-in and install.sh (run into a temporary root); and the metrics textfile.

Real components throughout: systemd-analyze, a private fail2ban-server, the installed command against the
Cloudflare emulator, prometheus_client's own parser.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
import tomllib
from dataclasses import Field
from datetime import UTC, datetime, timedelta
from itertools import takewhile
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconcile import config as config_mod
from reconcile import metrics, run
from reconcile.cloudflare import credentials
from reconcile.config_keys import CloudflareSection, EnrichSection, RunSection, key_fields, spec
from reconcile.config_parse import parse_section
from reconcile.core.changes import Action, Capacity, Change, Plan
from reconcile.core.model import BanEntry, Fail2banState
from reconcile.core.render import Stats
from reconcile.errors import Fail2banError
from tests.support.cf_emulator import ZONE_ID

REPO = Path(__file__).resolve().parents[2]
CRON = REPO / "cron"
COMMAND = "/usr/local/bin/reconcile"  # where install.sh puts the command (PREFIX=/usr/local)


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


def example_settings(text: str) -> dict[str, dict[str, tuple[str, Any]]]:
    """The example's commented-out settings ("#key = value") as section -> key -> (raw value, parsed)."""
    found: dict[str, dict[str, tuple[str, Any]]] = {}
    section = ""
    for line in text.splitlines():
        if header := re.fullmatch(r"\[(\w+)\]", line):
            section = header.group(1)
            found.setdefault(section, {})
        elif setting := re.fullmatch(r"#(\w+) = (.+)", line):
            key, raw = setting.groups()
            assert key not in found[section], f"[{section}] {key} documented twice"
            found[section][key] = (raw, tomllib.loads(f"v = {raw}")["v"])
    return found


def uncommented(text: str) -> str:
    """The example with every documented default made active."""
    return re.sub(r"(?m)^#(\w+ = )", r"\1", text)


# ----------------------------------------------------------------------------------------- install


# ----------------------------------------------------------------------------------------- systemd


def test_service_matches_the_code() -> None:
    """What the unit promises lines up with the config defaults, the credential name and install.sh."""
    service = unit_settings(CRON / "reconcile.service")["Service"]
    assert service["Type"] == ["oneshot"]
    assert service["ExecStart"] == [COMMAND]
    assert "User" not in service and "DynamicUser" not in service  # root: fail2ban's socket is root-only
    assert service["LoadCredential"] == [
        f"{credentials.TOKEN_CREDENTIAL}:{CloudflareSection().api_token_file}"
    ]
    writable = {path.lstrip("-") for value in service["ReadWritePaths"] for path in value.split()}
    assert "/var/lib/node_exporter" in writable
    assert "/run/lock" not in writable  # world-writable (1777): any user could hold the lock (issue 7)
    # The lock's directory is the unit's RuntimeDirectory, root-only, kept between runs (a cron-started run
    # may hold the lock inside while the service stops); the ASN cache's is its CacheDirectory.
    lock_dir = RunSection().lock_file.parent
    assert lock_dir == Path("/run") / service["RuntimeDirectory"][0]
    assert service["RuntimeDirectoryMode"] == ["0700"] and service["RuntimeDirectoryPreserve"] == ["yes"]
    cache_dir = EnrichSection().cache_file.parent
    assert cache_dir == Path("/var/cache") / service["CacheDirectory"][0]
    assert service["CacheDirectoryMode"] == ["0700"]
    timeout = int(service["TimeoutStartSec"][0])
    assert RunSection().max_seconds < timeout <= 2 * RunSection().max_seconds
    assert service["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert service["CapabilityBoundingSet"] == [""]
    for key in ("NoNewPrivileges", "PrivateTmp", "MemoryDenyWriteExecute", "LockPersonality"):
        assert service[key] == ["yes"], key
    assert service["ProtectSystem"] == ["strict"] and service["ProtectHome"] == ["yes"]
    install = (CRON / "install.sh").read_text()
    assert "PREFIX=${PREFIX:-/usr/local}" in install and "COMMAND=$PREFIX/bin/reconcile" in install


# ----------------------------------------------------------------------------------------- cron


# ----------------------------------------------------------------------------------------- config


def loaded_default(section: str, key: str, value: Any, source: Path) -> Any:
    """A documented default as the loader reads it (its own parser and check), to compare with the field's."""
    cls = config_mod.SECTIONS[section]
    return getattr(parse_section(cls, {key: value}, source, section), key)


def keys_of(section: str) -> dict[str, Field[Any]]:
    return {f.name: f for f in key_fields(config_mod.SECTIONS[section])}


def test_example_documents_exactly_the_loader_keys_with_their_defaults() -> None:
    example = CRON / "cloudflare-reconcile.toml.example"
    text = example.read_text()
    documented = example_settings(text)
    assert set(documented) == set(config_mod.SECTIONS)
    lines = text.splitlines()
    for section in config_mod.SECTIONS:
        keys = keys_of(section)
        assert set(documented[section]) == set(keys), section  # both directions
        for key, field in keys.items():
            raw, value = documented[section][key]
            assert loaded_default(section, key, value, example) == field.default, f"[{section}] {key} = {raw}"
            bound = spec(field).max
            if bound is not None:  # the comment block just above says it
                index = lines.index(f"#{key} = {raw}", lines.index(f"[{section}]"))
                above = " ".join(takewhile(lambda line: line.startswith("# "), reversed(lines[:index])))
                assert f"at most {bound:,}" in above or f"at most {bound}" in above, f"[{section}] {key}"
    for index, line in enumerate(lines):
        if re.fullmatch(r"#\w+ = .+", line):  # one line on what it does, just above
            assert lines[index - 1].startswith("# ") and len(lines[index - 1]) > 12, line


README_ROW = re.compile(r"\| `\[(\w+)\] (\w+)` \| `(.+?)` \| (.+) \|")


def test_readme_documents_exactly_the_loader_keys_with_their_defaults_and_bounds() -> None:
    """README's key table: one row per key, its default as the loader reads it, the field's one-line
    meaning first, then its bound (with unit) when it has one."""
    readme = REPO / "README.md"
    rows: dict[tuple[str, str], tuple[str, str]] = {}
    for line in readme.read_text().splitlines():
        if line.startswith("| `["):
            match = README_ROW.fullmatch(line)
            assert match, f"not a key row: {line}"
            section, key, raw, meaning = match.groups()
            assert (section, key) not in rows, f"[{section}] {key} documented twice"
            rows[section, key] = (raw, meaning)
    assert set(rows) == {(section, key) for section in config_mod.SECTIONS for key in keys_of(section)}
    for (section, key), (raw, meaning) in rows.items():
        field = keys_of(section)[key]
        value = tomllib.loads(f"v = {raw}")["v"]
        assert loaded_default(section, key, value, readme) == field.default, f"[{section}] {key} = {raw}"
        assert meaning.startswith(spec(field).doc), f"[{section}] {key}: {meaning}"
        if spec(field).max is not None:
            assert f"at most {spec(field).max:,} {spec(field).unit}" in meaning, f"[{section}] {key}"


def test_example_loads_and_validates(tmp_path: Path) -> None:
    shipped = CRON / "cloudflare-reconcile.toml.example"
    # As shipped: all commented out, so all defaults; the zone then comes from zone_id_file.
    data = tomllib.loads(shipped.read_text())
    assert data == {section: {} for section in config_mod.SECTIONS}
    config = config_mod.from_mapping(data, shipped, zone_id_reader=lambda path: ZONE_ID + "\n")
    assert config.cloudflare.zone_ids == (ZONE_ID,) and config.cloudflare.tag == "Blocked by fail2ban"
    # Every default made active, through the real loader (file, TOML, validation).
    zone_file = tmp_path / "ZONE_ID"
    zone_file.write_text(ZONE_ID + "\n")
    active = uncommented(shipped.read_text()).replace("/etc/cloudflare/ZONE_ID", str(zone_file))
    path = tmp_path / "cloudflare-reconcile.toml"
    path.write_text(active)
    loaded = config_mod.load(path)
    assert loaded.cloudflare.zone_ids == (ZONE_ID,)
    assert loaded.run.max_seconds == 100 and loaded.metrics.textfile is None
    assert loaded.run.lock_file == Path("/run/reconcile/lock")
    assert loaded.policy.skip_cloudflare_ranges is True and loaded.enrich.asn is False
    assert (loaded.enrich.whois_server.host, loaded.enrich.whois_server.port, loaded.enrich.timeout) == (
        "whois.cymru.com",
        43,
        10,
    )
    assert loaded.enrich.cache_file == Path("/var/cache/reconcile/asn.json")
    assert loaded.enrich.cache_ttl == timedelta(days=7)


# ----------------------------------------------------------------------------------------- fail2ban


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


def test_metrics_without_a_plan(tmp_path: Path) -> None:
    config = config_mod.from_mapping({"cloudflare": {"zone_ids": [ZONE_ID]}}, tmp_path / "c.toml")
    outcome = run.Outcome(
        datetime.now(UTC), error=Fail2banError("fail2ban is not running"), stats=Stats(0, 0.25)
    )
    moment = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    text = metrics.render(outcome, config, moment)
    got = families_of(text)
    assert got["reconcile_last_run_success"] == {(): 0} and got["reconcile_last_run_exit_code"] == {(): 1}
    assert got["reconcile_last_run_timestamp_seconds"] == {(): moment.timestamp()}
    assert got["reconcile_last_run_duration_seconds"] == {(): 0.25}
    # What the run never learned is absent, not a misleading zero.
    for name in ("reconcile_bans", "reconcile_rules", "reconcile_changes_planned"):
        assert got[name] == {} and f"# TYPE {name} gauge" in text


def test_metrics_escape_label_values(tmp_path: Path) -> None:
    odd = 'we"ird\\jail\nname'
    start = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    state = Fail2banState((odd, "sshd"), (BanEntry(odd, "1.2.3.4", start, None),))
    config = config_mod.from_mapping({"cloudflare": {"zone_ids": [ZONE_ID]}}, tmp_path / "c.toml")
    text = metrics.render(run.Outcome(start, state=state), config, start)
    assert families_of(text)["reconcile_bans"] == {(("jail", odd),): 1, (("jail", "sshd"),): 0}
    assert 'jail="we\\"ird\\\\jail\\nname"' in text


def test_write_textfile_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "reconcile.prom"
    versions = ("# A\n" + "a" * 2_000_000, "# B\n" + "b" * 3_000_000)  # big: a plain write shows halfway
    metrics.write_textfile(path, versions[0])
    seen: set[str] = set()
    partial: list[int] = []
    reads = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            text = path.read_text()
            reads += 1
            if text in versions:
                seen.add(text[2])
            else:
                partial.append(len(text))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(400):  # until the reader provably overlapped the writes
            metrics.write_textfile(path, versions[n % 2])
            if n >= 20 and seen == {"A", "B"} and reads >= 50:
                break
    finally:
        stop.set()
        thread.join()
    assert partial == []
    assert seen == {"A", "B"}, (seen, reads)
    assert [p.name for p in tmp_path.iterdir()] == ["reconcile.prom"]  # no temp file left


def test_write_textfile_mode_and_failure(tmp_path: Path) -> None:
    path = tmp_path / "reconcile.prom"
    old_umask = os.umask(0o077)
    try:
        metrics.write_textfile(path, "reconcile_up 1\n")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # the collector may run as another user
    with pytest.raises(UnicodeEncodeError):
        metrics.write_textfile(path, "reconcile_up \udcff\n")
    assert path.read_text() == "reconcile_up 1\n"  # the old file stays whole
    assert [p.name for p in tmp_path.iterdir()] == ["reconcile.prom"]
    with pytest.raises(FileNotFoundError):
        metrics.write_textfile(tmp_path / "missing" / "reconcile.prom", "x 1\n")


class _Collect(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_publish_warns_instead_of_failing(tmp_path: Path) -> None:
    textfile = tmp_path / "missing" / "reconcile.prom"
    config = config_mod.from_mapping(
        {"cloudflare": {"zone_ids": [ZONE_ID]}, "metrics": {"textfile": str(textfile)}}, tmp_path / "c.toml"
    )
    records: list[logging.LogRecord] = []
    handler = _Collect(records)
    logger = logging.getLogger("reconcile.metrics")
    logger.addHandler(handler)
    try:
        metrics.publish(run.Outcome(datetime.now(UTC)), config)
    finally:
        logger.removeHandler(handler)
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.WARNING, f"metrics: cannot write {textfile}: No such file or directory")
    ]
    unset = config_mod.from_mapping({"cloudflare": {"zone_ids": [ZONE_ID]}}, tmp_path / "c.toml")
    metrics.publish(
        run.Outcome(datetime.now(UTC)), unset
    )  # no textfile configured: nothing written, nothing logged
    assert len(records) == 1 and list(tmp_path.iterdir()) == []


def test_metrics_count_what_the_list_had_no_room_for(tmp_path: Path) -> None:
    """reconcile_over_capacity counts the bans skipped for room (Capacity.OVER), not the items evicted."""
    config = config_mod.from_mapping({"cloudflare": {"zone_ids": [ZONE_ID]}}, tmp_path / "c.toml")
    skipped = [
        Change(Action.SKIP, f"45.155.205.{n}", "over list capacity", capacity=Capacity.OVER)
        for n in (1, 2, 3)
    ]
    evicted = Change(Action.EXPIRE, "45.155.205.9", "over list capacity: …", capacity=Capacity.EVICTED)
    other = Change(Action.SKIP, "10.0.0.1", "allowlisted")
    plan = Plan((*skipped, evicted, other))
    outcome = run.Outcome(datetime.now(UTC), plan=plan, stats=Stats(0, 0.1))
    got = families_of(metrics.render(outcome, config, datetime(2026, 11, 21, 10, 0, tzinfo=UTC)))
    assert got["reconcile_over_capacity"] == {(): 3}
