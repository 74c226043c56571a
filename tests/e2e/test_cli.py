"""The command line: argument validation, dispatch to --check / --explain, the --report filters, start-up
imports, and a reader of stdout that goes away (`reconcile --report | head`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.harness import RECONCILE, Harness

# What a run needs and --version does not: together ~0.2 s of imports.
RUN_ONLY_MODULES = ("requests", "urllib3", "prometheus_client", "tabulate", "dateutil")


# ----------------------------------------------------------------------------------- validation


# ------------------------------------------------------------------------------------- dispatch


# -------------------------------------------------------------------------------------- start-up


def test_version_imports_none_of_the_run_modules():
    probe = (
        "import sys\n"
        "from reconcile.cli import main\n"
        "try:\n"
        "    main(['--version'])\n"
        "except SystemExit as stop:\n"
        "    assert stop.code == 0, stop.code\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("reconcile ")  # the version line, then the module list
    loaded = set(result.stdout.split())
    assert "reconcile.cli" in loaded
    assert not {m for m in loaded if m.split(".")[0] in RUN_ONLY_MODULES}


# ------------------------------------------------------------------------------- reader goes away


def run_into_closed_pipe(harness: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed command with stdout a pipe whose reader has already exited, like `| head -0`.

    Deterministic: every write to stdout fails with EPIPE, however small the output.
    """
    read_end, write_end = os.pipe()
    reader = subprocess.run(["true"], stdin=read_end, check=True)  # reads nothing, exits: the reader
    assert reader.returncode == 0
    os.close(read_end)
    config = harness.workdir / "reconcile.toml"
    if not config.exists():
        harness.config()
    try:
        result = subprocess.run(
            [str(RECONCILE), "--config", str(config), *args],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            env={k: v for k, v in os.environ.items() if not k.startswith(("CLOUDFLARE_", "CREDENTIALS_"))},
        )
    finally:
        os.close(write_end)
    harness.outputs.append(result.stderr)
    return result


def assert_quiet_stop(result: subprocess.CompletedProcess[str]) -> None:
    for noise in ("BrokenPipe", "Exception ignored", "internal error", "Traceback"):
        assert noise not in result.stderr, result.stderr


def test_report_into_a_closed_pipe_stops_quietly_with_the_runs_code(harness: Harness):
    harness.f2b.ban("sshd", "45.155.205.60", "45.155.205.61")
    result = run_into_closed_pipe(harness, "--report")
    assert result.returncode == 0
    assert_quiet_stop(result)
    assert "report: would write" in result.stderr  # the summary still came: the run went on


def test_run_into_a_closed_pipe_still_applies_and_keeps_its_code(harness: Harness):
    harness.f2b.ban("sshd", "45.155.205.60")
    metrics = harness.workdir / "reconcile.prom"
    harness.config(metrics={"textfile": str(metrics)})
    result = run_into_closed_pipe(harness, "--format", "json")
    assert result.returncode == 0
    assert_quiet_stop(result)
    assert "45.155.205.60" in harness.rules()
    assert "reconcile_last_run_exit_code 0.0" in metrics.read_text()


@pytest.mark.parametrize("closed", ["stdout", "stderr"])
def test_a_closed_stream_keeps_the_commands_code(harness: Harness, closed: str):
    """Started with stdout or stderr closed (`>&-`, `2>&-`): the exit code is still the run's, 0 for a
    report and 2 for a configuration error (the command's end once flushed its streams unchecked: 1)."""
    harness.f2b.ban("sshd", "45.155.205.62")
    config = harness.config()
    fd = 1 if closed == "stdout" else 2
    for args, code in (["--config", str(config), "--report"], 0), (["--config", "/nonexistent"], 2):
        # sh only closes the descriptor and execs the command: no shell between the test and the run.
        argv = ["sh", "-c", f'exec "$0" "$@" {fd}>&-', str(RECONCILE), *args]
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        harness.outputs.append(result.stderr)
        assert result.returncode == code, (args, result.stdout[-500:], result.stderr[-2000:])
        assert "Traceback" not in result.stdout + result.stderr


def test_report_filters_choose_the_rows(harness: Harness):
    harness.f2b.ban("sshd", "45.155.205.60")
    harness.f2b.ban("recidive", "45.155.205.61")
    everything = json.loads(harness.run("--report", "--format", "json").stdout)
    only_sshd = json.loads(harness.run("--report", "--format", "json", "--jail", "sshd").stdout)
    no_expiry = json.loads(harness.run("--report", "--format", "json", "--action", "expire").stdout)
    assert json.dumps(everything).count("45.155.205.6") >= 2
    assert "45.155.205.60" in json.dumps(only_sshd) and "45.155.205.61" not in json.dumps(only_sshd)
    assert "45.155.205.6" not in json.dumps(no_expiry)
