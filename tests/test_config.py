"""Configuration and credentials: good files load, every bad one names its file and key (exit 2)."""

import os
from datetime import timedelta
from pathlib import Path

import pytest

from reconcile import config, credentials
from reconcile.errors import ConfigError

ZONE = "023e105f4ecef8ad9ca31a8372d0c353"
ACCOUNT = "01a7362d577a6c3019a474fd6f485823"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "reconcile.toml"
    path.write_text(text)
    return path


def test_minimal_file_and_defaults(tmp_path):
    cfg = config.load(write(tmp_path, f'[cloudflare]\nzone_ids = ["{ZONE}"]\n'))
    assert cfg.zone_ids == (ZONE,)
    assert cfg.fail2ban_command == ("fail2ban-client",)
    assert cfg.tag == "Blocked by fail2ban" and cfg.mode == "block"
    assert cfg.max_requests_per_run == 600 and cfg.requests_per_minute == 200
    assert cfg.max_expire_fraction == 0.3 and cfg.max_rule_age is None
    assert cfg.host_id  # the hostname
    assert cfg.api_token_file == Path("/etc/cloudflare/API_TOKEN") and not cfg.api_token_file_explicit


def test_full_file(tmp_path):
    cfg = config.load(
        write(
            tmp_path,
            f"""
[fail2ban]
command = ["fail2ban-client", "-s", "/run/fail2ban/fail2ban.sock"]
jails = ["sshd", "recidive"]
timeout = 5
[cloudflare]
account_id = "{ACCOUNT}"
mode = "managed_challenge"
tag = "Blocked by fail2ban"
max_requests_per_run = 100
requests_per_minute = 50
[policy]
host_id = "web-1.example"
allowlist = ["198.18.0.0/15", "2a01:4f8::/32", "45.155.205.7"]
max_rule_age = "7d"
max_expire_fraction = 0.5
[run]
lock_file = "{tmp_path}/lock"
max_seconds = 50
[metrics]
textfile = "{tmp_path}/reconcile.prom"
""",
        )
    )
    assert cfg.account_id == ACCOUNT and cfg.zone_ids == ()
    assert cfg.jails == ("sshd", "recidive") and cfg.fail2ban_timeout == 5
    assert cfg.max_rule_age == timedelta(days=7)
    assert [str(n) for n in cfg.allowlist] == ["198.18.0.0/15", "2a01:4f8::/32", "45.155.205.7/32"]
    assert cfg.host_id == "web-1.example" and cfg.mode == "managed_challenge"
    assert cfg.metrics_textfile == tmp_path / "reconcile.prom"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[cloudflare\n", "not valid TOML"),
        ("[clouflare]\nzone_ids = []\n", "unknown section [clouflare]"),
        (f'[cloudflare]\nzone_ids = ["{ZONE}"]\nzone_id = "x"\n', "unknown key [cloudflare] zone_id"),
        ('[cloudflare]\nzone_ids = ["not-a-zone"]\n', "[cloudflare] zone_ids: 'not-a-zone'"),
        (f'[cloudflare]\nzone_ids = "{ZONE}"\n', "[cloudflare] zone_ids: must be a list"),
        (f'[cloudflare]\nzone_ids = ["{ZONE}"]\nmode = "allow"\n', "[cloudflare] mode: must be one of"),
        (
            f'[cloudflare]\nzone_ids = ["{ZONE}"]\naccount_id = "{ACCOUNT}"\n',
            "set either zone_ids or account_id",
        ),
        (
            f'[cloudflare]\nzone_ids = ["{ZONE}"]\nmax_requests_per_run = 0\n',
            "max_requests_per_run: must be greater",
        ),
        (
            f'[cloudflare]\nzone_ids = ["{ZONE}"]\nrequests_per_minute = "fast"\n',
            "requests_per_minute: must be a number",
        ),
        (
            f'[cloudflare]\nzone_ids = ["{ZONE}"]\nmax_requests_per_run = 1.5\n',
            "max_requests_per_run: must be a whole",
        ),
        (f'[cloudflare]\nzone_ids = ["{ZONE}"]\napi_base_url = "ftp://x"\n', "[cloudflare] api_base_url"),
        (
            f'[cloudflare]\nzone_ids = ["{ZONE}"]\n[policy]\nallowlist = ["10.0.0.0/33"]\n',
            "[policy] allowlist: '10.0.0.0/33'",
        ),
        (
            f'[cloudflare]\nzone_ids = ["{ZONE}"]\n[policy]\nmax_rule_age = "a week"\n',
            "[policy] max_rule_age: not a duration",
        ),
        (
            f'[cloudflare]\nzone_ids = ["{ZONE}"]\n[policy]\nmax_expire_fraction = 2\n',
            "[policy] max_expire_fraction",
        ),
        (f'[cloudflare]\nzone_ids = ["{ZONE}"]\n[policy]\nhost_id = "web 1"\n', "[policy] host_id"),
        (f'[cloudflare]\nzone_ids = ["{ZONE}"]\n[fail2ban]\ncommand = []\n', "[fail2ban] command"),
        (f'[cloudflare]\nzone_ids = ["{ZONE}"]\n[fail2ban]\ntimeout = true\n', "[fail2ban] timeout"),
        ('[cloudflare]\nzone_id_file = "/nonexistent/ZONE_ID"\n', "no zone configured"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, text, names):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    assert exc.value.exit_code == 2
    assert str(path) in str(exc.value)
    assert names in str(exc.value)


def test_explicit_missing_file_is_an_error_but_missing_default_means_defaults(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="configuration file not found"):
        config.load(tmp_path / "nope.toml")
    zone_file = tmp_path / "ZONE_ID"
    zone_file.write_text(f"{ZONE}\n")
    monkeypatch.setattr(config, "DEFAULT_PATH", tmp_path / "absent.toml")
    monkeypatch.setitem(config.DEFAULTS["cloudflare"], "zone_id_file", str(zone_file))
    cfg = config.load(None)  # the legacy scripts' users: no config file, zone from /etc/cloudflare/ZONE_ID
    assert cfg.zone_ids == (ZONE,)


def test_zone_id_file_is_read_when_no_zone_ids(tmp_path):
    zone_file = tmp_path / "ZONE_ID"
    zone_file.write_text(f"{ZONE}\n")
    cfg = config.load(write(tmp_path, f'[cloudflare]\nzone_id_file = "{zone_file}"\n'))
    assert cfg.zone_ids == (ZONE,)


# --- credentials ---------------------------------------------------------------------------------------

TOKEN = "cf-test-token-Q7x9Zp2Lw4"


def cfg_with(tmp_path, extra=""):
    return config.load(write(tmp_path, f'[cloudflare]\nzone_ids = ["{ZONE}"]\n{extra}'))


def secret_file(tmp_path, name, value, mode=0o600):
    path = tmp_path / name
    path.write_text(value + "\n")
    os.chmod(path, mode)
    return path


def test_token_order_credentials_dir_then_file_then_env(tmp_path):
    creds_dir = tmp_path / "creds"
    creds_dir.mkdir()
    token_file = secret_file(tmp_path, "API_TOKEN", "from-file")
    cfg = cfg_with(tmp_path, f'api_token_file = "{token_file}"\n')
    (creds_dir / "cloudflare-api-token").write_text("from-systemd\n")
    env = {"CREDENTIALS_DIRECTORY": str(creds_dir), "CLOUDFLARE_API_TOKEN": "from-env"}
    assert credentials.load(cfg, env).token == "from-systemd"
    assert credentials.load(cfg, {"CLOUDFLARE_API_TOKEN": "from-env"}).token == "from-file"
    cfg_default = cfg_with(tmp_path, f'api_token_file = "{tmp_path}/absent"\n')
    with pytest.raises(ConfigError, match="does not exist"):  # explicitly configured: must exist
        credentials.load(cfg_default, {"CLOUDFLARE_API_TOKEN": "from-env"})


def test_default_token_file_absent_falls_back_to_env(tmp_path, monkeypatch):
    monkeypatch.setitem(config.DEFAULTS["cloudflare"], "api_token_file", str(tmp_path / "absent"))
    assert credentials.load(cfg_with(tmp_path), {"CLOUDFLARE_API_TOKEN": "from-env"}).token == "from-env"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_token_file_readable_by_others_is_refused(tmp_path, mode):
    token_file = secret_file(tmp_path, "API_TOKEN", TOKEN, mode)
    with pytest.raises(ConfigError) as exc:
        credentials.load(cfg_with(tmp_path, f'api_token_file = "{token_file}"\n'), {})
    assert "readable by group or others" in str(exc.value) and "api_token_file" in str(exc.value)
    assert TOKEN not in str(exc.value)


def test_legacy_email_and_global_key(tmp_path):
    key_file = secret_file(tmp_path, "API_KEY", "global-key")
    cfg = cfg_with(
        tmp_path, f'api_token_file = ""\napi_key_file = "{key_file}"\napi_email = "ops@example.com"\n'
    )
    creds = credentials.load(cfg, {})
    assert (creds.email, creds.key, creds.token) == ("ops@example.com", "global-key", None)
    assert "global-key" not in repr(creds)
    cfg_no_email = cfg_with(tmp_path, f'api_token_file = ""\napi_key_file = "{key_file}"\n')
    with pytest.raises(ConfigError, match="api_email"):
        credentials.load(cfg_no_email, {})


def test_no_credentials_at_all(tmp_path):
    with pytest.raises(ConfigError, match="no Cloudflare API token found"):
        credentials.load(cfg_with(tmp_path, 'api_token_file = ""\n'), {})


def test_empty_token_file(tmp_path):
    token_file = secret_file(tmp_path, "API_TOKEN", "  ")
    with pytest.raises(ConfigError, match="empty"):
        credentials.load(cfg_with(tmp_path, f'api_token_file = "{token_file}"\n'), {})
