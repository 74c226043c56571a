"""Configuration and credentials: good files load, every bad one names its file and key (exit 2)."""

import os
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from reconcile import config
from reconcile.cloudflare import credentials
from reconcile.errors import ConfigError

ZONE = "023e105f4ecef8ad9ca31a8372d0c353"
ACCOUNT = "01a7362d577a6c3019a474fd6f485823"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "reconcile.toml"
    path.write_text(text)
    return path


def test_minimal_file_and_defaults(tmp_path):
    cfg = config.load(write(tmp_path, f'[cloudflare]\nzone_ids = ["{ZONE}"]\n'))
    assert cfg.cloudflare.zone_ids == (ZONE,)
    assert cfg.fail2ban.command == ("fail2ban-client",)
    assert cfg.cloudflare.tag == "Blocked by fail2ban" and cfg.cloudflare.mode == "block"
    assert cfg.cloudflare.max_requests_per_run == 600 and cfg.cloudflare.requests_per_minute == 200
    assert cfg.policy.max_expire_fraction == 0.3 and cfg.policy.max_rule_age is None
    assert cfg.policy.host_id  # the hostname
    assert (
        cfg.cloudflare.api_token_file == Path("/etc/cloudflare/API_TOKEN")
        and not cfg.cloudflare.api_token_file_explicit
    )


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
    assert cfg.cloudflare.account_id == ACCOUNT and cfg.cloudflare.zone_ids == ()
    assert cfg.fail2ban.jails == ("sshd", "recidive") and cfg.fail2ban.timeout == 5
    assert cfg.policy.max_rule_age == timedelta(days=7)
    assert [str(n) for n in cfg.policy.allowlist] == ["198.18.0.0/15", "2a01:4f8::/32", "45.155.205.7/32"]
    assert cfg.policy.host_id == "web-1.example" and cfg.cloudflare.mode == "managed_challenge"
    assert cfg.metrics.textfile == tmp_path / "reconcile.prom"


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
    read: list[Path] = []

    def read_zone_id_file(path: Path) -> str:  # the default zone_id_file, redirected to zone_file
        read.append(path)
        return Path(zone_file).read_text()

    monkeypatch.setattr(config, "read_zone_id_file", read_zone_id_file)
    cfg = config.load(None)  # the legacy scripts' users: no config file, zone from /etc/cloudflare/ZONE_ID
    assert read == [Path("/etc/cloudflare/ZONE_ID")]
    assert cfg.cloudflare.zone_ids == (ZONE,)


def test_zone_id_file_is_read_when_no_zone_ids(tmp_path):
    zone_file = tmp_path / "ZONE_ID"
    zone_file.write_text(f"{ZONE}\n")
    cfg = config.load(write(tmp_path, f'[cloudflare]\nzone_id_file = "{zone_file}"\n'))
    assert cfg.cloudflare.zone_ids == (ZONE,)


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


def test_default_token_file_absent_falls_back_to_env(tmp_path):
    cfg = cfg_with(tmp_path)  # api_token_file not set: the default, which need not exist
    cfg = replace(cfg, cloudflare=replace(cfg.cloudflare, api_token_file=tmp_path / "absent"))
    assert credentials.load(cfg, {"CLOUDFLARE_API_TOKEN": "from-env"}).token == "from-env"


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


# --- issue 7 item 8: config errors that crashed (exit 1) are exit 2 naming the key, at load time ------

BASE = f'[cloudflare]\nzone_ids = ["{ZONE}"]\n'

# Every timeout, the pace, the time limit, the retries and the budget: nan, inf and absurd values.
NUMERIC_KEYS = [
    ("fail2ban", "timeout", "at most 120 seconds"),
    ("cloudflare", "timeout", "at most 120 seconds"),
    ("enrich", "timeout", "at most 120 seconds"),
    ("run", "max_seconds", "at most 300 seconds"),
    ("cloudflare", "requests_per_minute", "at most 60000 per minute"),
    ("cloudflare", "max_requests_per_run", "at most 10000 requests"),
    ("cloudflare", "retries", "at most 10 retries"),
]


def with_key(section: str, key: str, value: str) -> str:
    if section == "cloudflare":
        return f"{BASE}{key} = {value}\n"
    return f"{BASE}[{section}]\n{key} = {value}\n"


@pytest.mark.parametrize("value", ["nan", "inf", "+inf", "-inf", "-nan"])
@pytest.mark.parametrize(("section", "key", "bound"), NUMERIC_KEYS)
def test_nan_and_inf_are_refused_naming_the_key(tmp_path, section, key, bound, value):
    path = write(tmp_path, with_key(section, key, value))
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    assert exc.value.exit_code == 2
    assert f"{path}: [{section}] {key}: must be a finite number, not " in str(exc.value)


@pytest.mark.parametrize("value", ["1e300", "99999999999999999999999999999", "100000"])
@pytest.mark.parametrize(("section", "key", "bound"), NUMERIC_KEYS)
def test_absurd_values_are_refused_naming_the_key_and_the_bound(tmp_path, section, key, bound, value):
    path = write(tmp_path, with_key(section, key, value))
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    assert f"{path}: [{section}] {key}:" in str(exc.value)
    if "e" not in value:  # a float for an integer key is refused for its type first
        assert bound in str(exc.value)


@pytest.mark.parametrize(("section", "key", "bound"), NUMERIC_KEYS)
def test_values_at_the_bound_are_accepted(tmp_path, section, key, bound):
    limit = bound.split()[2]
    cfg = config.load(write(tmp_path, with_key(section, key, limit)))
    assert float(limit) in {
        cfg.fail2ban.timeout,
        cfg.cloudflare.timeout,
        cfg.enrich.timeout,
        cfg.run.max_seconds,
        cfg.cloudflare.requests_per_minute,
        cfg.cloudflare.max_requests_per_run,
        cfg.cloudflare.retries,
    }


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (
            f'{BASE}[policy]\nmax_rule_age = "99999999999999w"\n',
            "[policy] max_rule_age: '99999999999999w' is too",
        ),
        (f'{BASE}[policy]\nmax_rule_age = "3651d"\n', "at most 3650d"),
        (f'{BASE}[policy]\nmax_rule_age = "0"\n', "[policy] max_rule_age: must be longer than zero"),
        (f'{BASE}[policy]\nmax_rule_age = "\u0667d"\n', "[policy] max_rule_age: not a duration"),  # Arabic 7
        (
            '[cloudflare]\nzone_ids = ["023e105f4ecef8ad9ca31a8372d0c353\\n"]\n',
            "[cloudflare] zone_ids: '023e",
        ),
        ('[cloudflare]\naccount_id = "01a7362d577a6c3019a474fd6f485823\\n"\n', "[cloudflare] account_id"),
        (f'{BASE}[policy]\nhost_id = "web1\\n"\n', "[policy] host_id: 'web1\\n'"),
        (f'{BASE}[run]\nlock_file = ""\n', "[run] lock_file: must be the path of a file"),
        (f'{BASE}[run]\nlock_file = "/run/x\\u0000y"\n', "[run] lock_file: must be the path of a file"),
    ],
)
def test_more_bad_values_name_file_and_key(tmp_path, text, names):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    assert exc.value.exit_code == 2
    assert str(path) in str(exc.value) and names in str(exc.value)


def test_max_rule_age_up_to_ten_years(tmp_path):
    cfg = config.load(write(tmp_path, f'{BASE}[policy]\nmax_rule_age = "520w"\n'))
    assert cfg.policy.max_rule_age == timedelta(weeks=520)


def test_config_path_that_is_a_directory(tmp_path):
    with pytest.raises(ConfigError) as exc:
        config.load(tmp_path)
    assert exc.value.exit_code == 2
    assert f"{tmp_path}: is a directory; --config must name the configuration file" in str(exc.value)


def test_config_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "reconcile.toml"
    path.write_bytes(BASE.encode() + b'tag = "Blocked by fail2ban \xe9t\xe9"\n')  # Latin-1
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    assert exc.value.exit_code == 2
    assert f"{path}: not UTF-8 text (byte 0xe9 at offset" in str(exc.value)


def test_zone_id_file_that_is_not_utf8(tmp_path):
    zone_file = tmp_path / "ZONE_ID"
    zone_file.write_bytes(b"\xff\xfe" + ZONE.encode("utf-16-le"))
    path = write(tmp_path, f'[cloudflare]\nzone_id_file = "{zone_file}"\n')
    with pytest.raises(ConfigError, match=r"\[cloudflare\] zone_id_file: .* is not UTF-8"):
        config.load(path)


def test_a_fifo_as_config_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "reconcile.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        config.load(fifo)


# --- issue 7 item 6: the config names what root runs: nobody else may write it ---------------------


@pytest.mark.parametrize("mode", [0o666, 0o646, 0o664, 0o620, 0o602, 0o660])
def test_config_file_writable_by_group_or_others_is_refused(tmp_path, mode):
    path = write(tmp_path, BASE)
    path.chmod(mode)
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    message = str(exc.value)
    assert exc.value.exit_code == 2
    assert message.startswith(f"{path}: ") and f"mode {mode:04o}" in message
    assert f"chmod go-w {path}" in message


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600, 0o400, 0o444])
def test_config_file_only_its_owner_can_write_is_accepted(tmp_path, mode):
    path = write(tmp_path, BASE)
    path.chmod(mode)
    assert config.load(path).cloudflare.zone_ids == (ZONE,)


def test_config_file_of_another_user_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file away")
    path = write(tmp_path, BASE)
    os.chown(path, 65534, 65534)
    with pytest.raises(ConfigError, match=f"{path}: the configuration file is owned by uid 65534"):
        config.load(path)


def test_a_symlinked_config_is_judged_by_its_target(tmp_path):
    target = write(tmp_path, BASE)
    link = tmp_path / "link.toml"
    link.symlink_to(target)
    assert config.load(link).cloudflare.zone_ids == (ZONE,)
    target.chmod(0o666)
    with pytest.raises(ConfigError, match="mode 0666"):
        config.load(link)


# --- new keys: [policy] skip_cloudflare_ranges and [enrich] (DESIGN §7) -----------------------------


def test_new_keys_defaults(tmp_path):
    cfg = config.load(write(tmp_path, BASE))
    assert cfg.policy.skip_cloudflare_ranges is True
    assert cfg.enrich.asn is False
    assert (cfg.enrich.whois_server.host, cfg.enrich.whois_server.port) == ("whois.cymru.com", 43)
    assert cfg.enrich.timeout == 10.0
    assert cfg.enrich.cache_file == Path("/var/cache/reconcile/asn.json")
    assert cfg.enrich.cache_ttl == timedelta(days=7)
    assert cfg.run.lock_file == Path("/run/reconcile/lock")


def test_new_keys_set(tmp_path):
    cfg = config.load(
        write(
            tmp_path,
            f"""{BASE}[policy]
skip_cloudflare_ranges = false
[enrich]
asn = true
whois_server = "127.0.0.1:4343"
timeout = 2.5
cache_file = "{tmp_path}/asn.json"
cache_ttl = "12h"
""",
        )
    )
    assert cfg.policy.skip_cloudflare_ranges is False and cfg.enrich.asn is True
    assert (cfg.enrich.whois_server.host, cfg.enrich.whois_server.port) == ("127.0.0.1", 4343)
    assert cfg.enrich.timeout == 2.5
    assert cfg.enrich.cache_file == tmp_path / "asn.json"
    assert cfg.enrich.cache_ttl == timedelta(hours=12)


@pytest.mark.parametrize(
    ("server", "host", "port"),
    [
        ("whois.cymru.com:43", "whois.cymru.com", 43),
        ("whois.cymru.com", "whois.cymru.com", 43),
        ("whois.example.net.:4343", "whois.example.net.", 4343),
        ("127.0.0.1:4343", "127.0.0.1", 4343),
        ("127.0.0.1", "127.0.0.1", 43),
        ("[::1]:43", "::1", 43),
        ("[2001:db8::5]:65535", "2001:db8::5", 65535),
        ("[::1]", "::1", 43),
        ("::1", "::1", 43),
    ],
)
def test_whois_server_forms(tmp_path, server, host, port):
    cfg = config.load(write(tmp_path, f'{BASE}[enrich]\nwhois_server = "{server}"\n'))
    assert (cfg.enrich.whois_server.host, cfg.enrich.whois_server.port) == (host, port)


@pytest.mark.parametrize(
    "server",
    [
        "",
        "whois.cymru.com:",
        "whois.cymru.com:0",
        "whois.cymru.com:65536",
        "whois.cymru.com:http",
        "whois.cymru.com:43\\n",
        "whois cymru.com",
        "-whois.cymru.com",
        "999.1.1.1",
        "[::1]:",
        "[whois.cymru.com]:43",
        "1.2.3.4:43:43",
        "::1:43x",
        "http://whois.cymru.com",
    ],
)
def test_bad_whois_server_names_the_key(tmp_path, server):
    path = write(tmp_path, f'{BASE}[enrich]\nwhois_server = "{server}"\n')
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    assert f"{path}: [enrich] whois_server: " in str(exc.value)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (
            f'{BASE}[policy]\nskip_cloudflare_ranges = "yes"\n',
            "[policy] skip_cloudflare_ranges: must be true or",
        ),
        (f"{BASE}[policy]\nskip_cloudflare_ranges = 1\n", "[policy] skip_cloudflare_ranges: must be true or"),
        (f"{BASE}[enrich]\nasn = 0\n", "[enrich] asn: must be true or false"),
        (f'{BASE}[enrich]\nasn = "false"\n', "[enrich] asn: must be true or false"),
        (f"{BASE}[enrich]\ntimeout = 0\n", "[enrich] timeout: must be greater than zero"),
        (f"{BASE}[enrich]\ntimeout = nan\n", "[enrich] timeout: must be a finite number"),
        (f'{BASE}[enrich]\ncache_file = ""\n', "[enrich] cache_file: must be the path of a file"),
        (f'{BASE}[enrich]\ncache_ttl = "0d"\n', "[enrich] cache_ttl: must be longer than zero"),
        (f'{BASE}[enrich]\ncache_ttl = ""\n', "[enrich] cache_ttl: not a duration"),
        (f'{BASE}[enrich]\ncache_ttl = "1 week"\n', "[enrich] cache_ttl: not a duration"),
        (f'{BASE}[enrich]\ncache_ttl = "99999999999999w"\n', "[enrich] cache_ttl: '99999999999999w' is too"),
        (f'{BASE}[enrich]\nwhois = "x"\n', "unknown key [enrich] whois"),
    ],
)
def test_bad_new_keys_name_file_and_key(tmp_path, text, names):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    assert exc.value.exit_code == 2
    assert str(path) in str(exc.value) and names in str(exc.value)


# --- through the installed command: exit 2, naming the file, before fail2ban is read -----------------
