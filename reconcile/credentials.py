"""Where the Cloudflare secret comes from (DESIGN §7). Never from the config file itself.

Order: systemd's $CREDENTIALS_DIRECTORY (LoadCredential=), then the configured file (refused when group or
others can read it), then the environment. The legacy email + global key pair is looked up the same way.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from reconcile.cloudflare import Credentials
from reconcile.config import Config
from reconcile.errors import ConfigError

TOKEN_CREDENTIAL = "cloudflare-api-token"  # noqa: S105 - a file name, not a secret
KEY_CREDENTIAL = "cloudflare-api-key"


def load(config: Config, environ: Mapping[str, str] | None = None) -> Credentials:
    env = os.environ if environ is None else environ
    token = _from_credentials_dir(env, TOKEN_CREDENTIAL)
    if token is None and config.api_token_file is not None:
        token = _from_file(config.api_token_file, "api_token_file", required=config.api_token_file_explicit)
    if token is None:
        token = env.get("CLOUDFLARE_API_TOKEN", "").strip() or None
    if token is not None:
        return Credentials(token=token)

    key = _from_credentials_dir(env, KEY_CREDENTIAL)
    if key is None and config.api_key_file is not None:
        key = _from_file(config.api_key_file, "api_key_file", required=True)
    if key is None:
        key = env.get("CLOUDFLARE_API_KEY", "").strip() or None
    email = config.api_email or env.get("CLOUDFLARE_EMAIL", "").strip()
    if key is not None:
        if not email:
            raise ConfigError(f"{config.path}: [cloudflare] api_email: required with a global API key")
        return Credentials(email=email, key=key)
    where = f"$CREDENTIALS_DIRECTORY/{TOKEN_CREDENTIAL}"
    if config.api_token_file is not None:
        where += f", {config.api_token_file}"
    raise ConfigError(
        f"{config.path}: [cloudflare] api_token_file: no Cloudflare API token found (looked in {where}, "
        "$CLOUDFLARE_API_TOKEN)"
    )


def _from_credentials_dir(env: Mapping[str, str], name: str) -> str | None:
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    path = Path(directory) / name
    try:
        return _nonempty(path.read_text(encoding="utf-8"), path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read credential: {exc.strerror}") from None


def _from_file(path: Path, key: str, *, required: bool) -> str | None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if required:
            raise ConfigError(f"[cloudflare] {key}: {path} does not exist") from None
        return None
    except OSError as exc:
        raise ConfigError(f"[cloudflare] {key}: cannot read {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"[cloudflare] {key}: {path} is readable by group or others (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod 600 {path}"
        )
    try:
        return _nonempty(path.read_text(encoding="utf-8"), path)
    except OSError as exc:
        raise ConfigError(f"[cloudflare] {key}: cannot read {path}: {exc.strerror}") from None


def _nonempty(text: str, path: Path) -> str:
    value = text.strip()
    if not value:
        raise ConfigError(f"{path}: credential file is empty")
    return value
