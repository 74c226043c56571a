"""Where the Cloudflare secret comes from (DESIGN §7). Never from the config file itself.

Order: systemd's $CREDENTIALS_DIRECTORY (LoadCredential=), then the configured file (refused when group or
others can read it), then the environment. The legacy email + global key pair is looked up the same way.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reconcile.config import Config
from reconcile.errors import ConfigError

TOKEN_CREDENTIAL = "cloudflare-api-token"  # noqa: S105 - a file name, not a secret
KEY_CREDENTIAL = "cloudflare-api-key"
# Header values must be plain printable ASCII: requests would otherwise raise InvalidHeader with the value
# (the secret) in its message.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True)
class Credentials:
    """An API token, or the legacy email + global API key pair. Never shows a secret when printed."""

    token: str | None = field(default=None, repr=False)
    email: str | None = field(default=None, repr=False)
    key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.token is not None:
            if self.email is not None or self.key is not None:
                raise ConfigError("Cloudflare credentials: give an API token or email + key, not both")
            if not _HEADER_SAFE.fullmatch(self.token):
                raise ConfigError("Cloudflare API token is empty or contains spaces or control characters")
            return
        if self.email is None or self.key is None:
            raise ConfigError("Cloudflare credentials: need an API token, or an email and a global API key")
        if not _HEADER_SAFE.fullmatch(self.email):
            raise ConfigError("Cloudflare account email is empty or contains spaces or control characters")
        if not _HEADER_SAFE.fullmatch(self.key):
            raise ConfigError("Cloudflare global API key is empty or contains spaces or control characters")

    def headers(self) -> dict[str, str]:
        if self.token is not None:
            return {"Authorization": f"Bearer {self.token}"}
        assert self.email is not None and self.key is not None  # __post_init__ guarantees it
        return {"X-Auth-Email": self.email, "X-Auth-Key": self.key}

    def redact(self, text: str) -> str:
        """`text` with every secret replaced by ***: for text that came back from the other side."""
        for secret in (self.token, self.key):
            if secret:
                text = text.replace(secret, "***")
        return text

    def __repr__(self) -> str:
        if self.token is not None:
            return "Credentials(token=***)"
        return f"Credentials(email={self.email}, key=***)"

    __str__ = __repr__


def load(config: Config, environ: Mapping[str, str] | None = None) -> Credentials:
    env = os.environ if environ is None else environ
    token = _from_credentials_dir(env, TOKEN_CREDENTIAL)
    if token is None and config.cloudflare.api_token_file is not None:
        token = _from_file(
            config.cloudflare.api_token_file,
            "api_token_file",
            required=config.cloudflare.api_token_file_explicit,
        )
    if token is None:
        token = env.get("CLOUDFLARE_API_TOKEN", "").strip() or None
    if token is not None:
        return Credentials(token=token)

    key = _from_credentials_dir(env, KEY_CREDENTIAL)
    if key is None and config.cloudflare.api_key_file is not None:
        key = _from_file(config.cloudflare.api_key_file, "api_key_file", required=True)
    if key is None:
        key = env.get("CLOUDFLARE_API_KEY", "").strip() or None
    email = config.cloudflare.api_email or env.get("CLOUDFLARE_EMAIL", "").strip()
    if key is not None:
        if not email:
            raise ConfigError(f"{config.path}: [cloudflare] api_email: required with a global API key")
        return Credentials(email=email, key=key)
    where = f"$CREDENTIALS_DIRECTORY/{TOKEN_CREDENTIAL}"
    if config.cloudflare.api_token_file is not None:
        where += f", {config.cloudflare.api_token_file}"
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
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: credential {name} is not UTF-8 text") from None


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
    except UnicodeDecodeError:
        # Not an internal error: the file is the operator's. The bytes are not shown (they may be the secret).
        raise ConfigError(f"[cloudflare] {key}: {path} is not UTF-8 text") from None


def _nonempty(text: str, path: Path) -> str:
    value = text.strip()
    if not value:
        raise ConfigError(f"{path}: credential file is empty")
    return value
