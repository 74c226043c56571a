"""The command line: argument validation, dispatch to --check / --explain, the --report filters, start-up
imports, and a reader of stdout that goes away (`reconcile --report | head`)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reconcile import cli
from reconcile.core.changes import Action
from reconcile.core.render import Selection
from reconcile.errors import EXIT_CONFIG
from reconcile.ops import check, explain
from tests.support.cf_emulator import TOKEN, ZONE_ID


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the command line in-process; it must stop with exit 2 (usage). Returns stderr."""
    with pytest.raises(SystemExit) as stopped:
        cli.main(list(argv))
    assert stopped.value.code == EXIT_CONFIG
    return capsys.readouterr().err


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A configuration that loads, with a token file, pointing at a closed loopback port."""
    token = tmp_path / "API_TOKEN"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    path = tmp_path / "reconcile.toml"
    path.write_text(
        "[cloudflare]\n"
        'api_base_url = "http://127.0.0.1:9"\n'
        f'api_token_file = "{token}"\n'
        f'zone_ids = ["{ZONE_ID}"]\n'
        "[run]\n"
        f'lock_file = "{tmp_path / "lock"}"\n'
    )
    return path


# ----------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("value", ["not-an-ip", "192.0.2.0/24", "256.1.1.1", "", "2606:4700::1111::1"])
def test_explain_of_something_that_is_not_an_ip_is_a_usage_error(capsys, value):
    err = usage_error(capsys, "--explain", value)
    assert f"not an IP address: {value!r}" in err


def test_an_invalid_ip_is_refused_before_the_configuration_is_read(capsys, tmp_path):
    err = usage_error(capsys, "--config", str(tmp_path / "missing.toml"), "--explain", "nope")
    assert "not an IP address" in err and "missing.toml" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--check", "--report"],
        ["--check", "--explain", "203.0.113.7"],
        ["--report", "--explain", "203.0.113.7"],
    ],
)
def test_check_report_and_explain_exclude_each_other(capsys, argv):
    assert "not allowed with argument" in usage_error(capsys, *argv)


def test_unknown_action_names_it_and_the_choices(capsys):
    err = usage_error(capsys, "--report", "--action", "add,bogus")
    assert "'bogus'" in err
    for action in ("add", "renew", "expire", "keep", "foreign", "skip"):
        assert action in err


@pytest.mark.parametrize("argv", [["--report", "--action", ","], ["--report", "--jail", " , "]])
def test_empty_filter_lists_are_refused(capsys, argv):
    usage_error(capsys, *argv)


@pytest.mark.parametrize("argv", [["--action", "add"], ["--jail", "sshd"], ["--check", "--jail", "sshd"]])
def test_filters_need_report(capsys, argv):
    assert "add --report" in usage_error(capsys, *argv)


def test_filters_combine_repeats_and_comma_lists():
    args = cli.parser().parse_args(
        [
            "--report",
            "--action",
            "add, expire",
            "--action",
            "keep",
            "--jail",
            "sshd,recidive",
            "--jail",
            "nginx",
        ]
    )
    assert cli.selection(args) == Selection(
        actions=frozenset({Action.ADD, Action.EXPIRE, Action.KEEP}),
        jails=frozenset({"sshd", "recidive", "nginx"}),
    )
    assert cli.selection(cli.parser().parse_args(["--report"])) == Selection()


def test_explain_parses_both_families():
    assert cli.parser().parse_args(["--explain", " 2606:4700::1111 "]).explain == (
        ipaddress.ip_address("2606:4700::1111"),
        "",
    )
    assert cli.parser().parse_args(["--explain", "203.0.113.7"]).explain == (
        ipaddress.ip_address("203.0.113.7"),
        "",
    )


# ------------------------------------------------------------------------------------- dispatch


def test_check_is_dispatched_with_config_credentials_and_format(monkeypatch, config_file):
    calls: list[tuple[Any, ...]] = []

    def fake(config, creds, fmt):
        calls.append((config, creds, fmt))
        return 7

    monkeypatch.setattr(check, "main", fake)
    assert cli.main(["--config", str(config_file), "--check", "--format", "json", "-q"]) == 7
    ((config, creds, fmt),) = calls
    assert config.path == config_file and creds.token == TOKEN and fmt == "json"


def test_explain_is_dispatched_with_the_parsed_address(monkeypatch, config_file):
    calls: list[tuple[Any, ...]] = []

    def fake(config, creds, ip, fmt, read_as=""):
        calls.append((config, creds, ip, fmt))
        return 0

    monkeypatch.setattr(explain, "main", fake)
    assert cli.main(["--config", str(config_file), "--explain", "2606:4700::1111", "-q"]) == 0
    ((_config, creds, ip, fmt),) = calls
    assert ip == ipaddress.IPv6Address("2606:4700::1111") and fmt == "table" and creds.token == TOKEN


# -------------------------------------------------------------------------------------- start-up


# ------------------------------------------------------------------------------- reader goes away


def test_the_run_reads_fail2ban_ahead_once_and_the_catch_up_reads_it_afresh() -> None:
    # fail2ban's read starts before the run's modules load; the catch-up after the writes must still see
    # the bans that came meanwhile, not the state read ahead.
    from concurrent.futures import Future

    from reconcile.core.model import BanEntry, Fail2banState

    ahead = Fail2banState(("sshd",), ())
    later = Fail2banState(("sshd",), (BanEntry("sshd", "45.0.0.1", datetime(2026, 12, 3, tzinfo=UTC), None),))
    first: Future[Fail2banState] = Future()
    first.set_result(ahead)
    asked: list[object] = []

    def fresh(config: object) -> Fail2banState:
        asked.append(config)
        return later

    read = cli.prefetched_then_fresh(first, fresh)
    config = object()
    assert read(config) is ahead and asked == []  # type: ignore[arg-type]
    assert read(config) is later and read(config) is later  # type: ignore[arg-type]
    assert asked == [config, config]


def test_a_failed_read_ahead_fails_where_the_run_reads() -> None:
    from concurrent.futures import Future

    from reconcile.errors import Fail2banError

    first: Future[object] = Future()
    first.set_exception(Fail2banError("fail2ban-client status: not running"))
    read = cli.prefetched_then_fresh(first, lambda config: None)  # type: ignore[arg-type, return-value]
    with pytest.raises(Fail2banError, match="not running"):
        read(object())  # type: ignore[arg-type]
