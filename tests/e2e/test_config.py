"""Configuration and credentials: good files load, every bad one names its file and key (exit 2)."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.harness import RECONCILE, toml_value

ZONE = "023e105f4ecef8ad9ca31a8372d0c353"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "reconcile.toml"
    path.write_text(text)
    return path


# --- credentials ---------------------------------------------------------------------------------------

TOKEN = "cf-test-token-Q7x9Zp2Lw4"


def secret_file(tmp_path, name, value, mode=0o600):
    path = tmp_path / name
    path.write_text(value + "\n")
    os.chmod(path, mode)
    return path


# --- issue 7 item 8: config errors that crashed (exit 1) are exit 2 naming the key, at load time ------


# --- issue 7 item 6: the config names what root runs: nobody else may write it ---------------------


# --- new keys: [policy] skip_cloudflare_ranges and [enrich] (DESIGN §7) -----------------------------


# --- through the installed command: exit 2, naming the file, before fail2ban is read -----------------


def command_config(tmp_path: Path, extra: str = "") -> tuple[Path, Path]:
    """A config whose fail2ban command records that it ran: a config error must stop the run before."""
    marker = tmp_path / "fail2ban-ran"
    token = secret_file(tmp_path, "API_TOKEN", TOKEN)
    command = ["/bin/sh", "-c", f'echo "$@" >> {marker}; exit 1', "fail2ban-client"]
    path = write(
        tmp_path,
        f"[fail2ban]\ncommand = {toml_value(command)}\n"
        f'[cloudflare]\nzone_ids = ["{ZONE}"]\napi_token_file = "{token}"\n'
        f'api_base_url = "http://127.0.0.1:9/client/v4"\n'
        f'[run]\nlock_file = "{tmp_path}/lock"\n{extra}',
    )
    return path, marker


def run_command(*args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("CLOUDFLARE_", "CREDENTIALS_", "JOURNAL_"))
    }
    return subprocess.run(
        [str(RECONCILE), *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, env=env
    )


def test_command_refuses_a_config_of_mode_0666(tmp_path):
    path, marker = command_config(tmp_path)
    assert run_command("--config", str(path)).returncode == 1  # sane file: it runs, fail2ban "fails"
    assert marker.exists()
    marker.unlink()
    path.chmod(0o666)
    result = run_command("--config", str(path))
    assert result.returncode == 2, result.stderr
    assert f"{path}: the configuration file has mode 0666" in result.stderr
    assert f"chmod go-w {path}" in result.stderr and "internal error" not in result.stderr
    assert not marker.exists()  # checked before fail2ban was read


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        ('[policy]\nmax_rule_age = "99999999999999w"\n', "[policy] max_rule_age"),
        ("[enrich]\ntimeout = inf\n", "[enrich] timeout"),
        ('[policy]\nhost_id = "web1\\n"\n', "[policy] host_id"),
    ],
)
def test_command_config_errors_are_exit_2_before_fail2ban(tmp_path, extra, names):
    path, marker = command_config(tmp_path, extra)
    result = run_command("--config", str(path))
    assert result.returncode == 2, result.stderr
    assert str(path) in result.stderr and names in result.stderr and "internal error" not in result.stderr
    assert not marker.exists()


def test_command_config_directory_and_not_utf8(tmp_path):
    result = run_command("--config", str(tmp_path))
    assert result.returncode == 2 and "is a directory" in result.stderr, result.stderr
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"# r\xe9glages\n")
    result = run_command("--config", str(path))
    assert result.returncode == 2 and "not UTF-8" in result.stderr, result.stderr
