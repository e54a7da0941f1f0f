"""Service accounts: who they are, where their secrets live, how a process gets its own.

The secrets of the local stack live in `<data_dir>/secrets/mqtt-accounts.json` (mode 0600,
generated once by the first bootstrap, never in the repository). A process learns its account
from FLEETPULSE_MQTT_USERNAME and FLEETPULSE_MQTT_PASSWORD; the stack supervisor and the tests
set both with `process_environment`. With only the username set, `process_credentials` reads
the password from the secrets file, which is handy when starting one process by hand.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, get_args

from config.settings import Settings

ServiceAccount = Literal["admin", "ingest", "bridge", "api", "loadgen"]
SERVICE_ACCOUNTS: Final[tuple[ServiceAccount, ...]] = get_args(ServiceAccount)
# loadgen publishes any device topic (tests, benchmarks, the simulator's load mode); it is
# only ever created on the local stack, never in production.
LOCAL_ONLY_ACCOUNTS: Final[frozenset[ServiceAccount]] = frozenset({"loadgen"})
SECRETS_FILE = Path("secrets") / "mqtt-accounts.json"
PASSWORD_BYTES = 24


class CredentialsError(Exception):
    """An MQTT account's credentials are missing or unreadable; the message says where to look."""


@dataclass(frozen=True)
class MqttCredentials:
    username: str
    password: str

    def __repr__(self) -> str:
        return f"MqttCredentials(username={self.username!r}, password='***')"


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def secrets_path(data_dir: Path) -> Path:
    return data_dir / SECRETS_FILE


def accounts_for(environment: str) -> tuple[ServiceAccount, ...]:
    if environment == "production":
        return tuple(a for a in SERVICE_ACCOUNTS if a not in LOCAL_ONLY_ACCOUNTS)
    return SERVICE_ACCOUNTS


def ensure_service_secrets(
    data_dir: Path, *, accounts: tuple[ServiceAccount, ...] = SERVICE_ACCOUNTS
) -> dict[ServiceAccount, MqttCredentials]:
    """Load the secrets file, adding a random password for every account it lacks."""
    path = secrets_path(data_dir)
    stored = _read_secrets(path) if path.exists() else {}
    missing = [account for account in accounts if account not in stored]
    if missing:
        for account in missing:
            stored[account] = new_password()
        _write_private(path, json.dumps(stored, indent=2, sort_keys=True) + "\n")
    return {account: MqttCredentials(account, stored[account]) for account in accounts}


def load_service_credentials(data_dir: Path, account: ServiceAccount) -> MqttCredentials:
    path = secrets_path(data_dir)
    if not path.exists():
        raise CredentialsError(
            f"no MQTT secrets at {path}: start the stack once (`make run`) to create them, "
            "or set FLEETPULSE_MQTT_USERNAME and FLEETPULSE_MQTT_PASSWORD"
        )
    stored = _read_secrets(path)
    if account not in stored:
        raise CredentialsError(f"{path} has no password for the MQTT account {account!r}")
    return MqttCredentials(account, stored[account])


def process_environment(data_dir: Path, account: ServiceAccount) -> dict[str, str]:
    """FLEETPULSE_* variables that hand one process its MQTT account (and the api the admin
    account it provisions devices with)."""
    own = load_service_credentials(data_dir, account)
    env = {"FLEETPULSE_MQTT_USERNAME": own.username, "FLEETPULSE_MQTT_PASSWORD": own.password}
    if account == "api":
        admin = load_service_credentials(data_dir, "admin")
        env["FLEETPULSE_MQTT_ADMIN_USERNAME"] = admin.username
        env["FLEETPULSE_MQTT_ADMIN_PASSWORD"] = admin.password
    return env


def process_credentials(
    settings: Settings, *, account: ServiceAccount | None = None
) -> MqttCredentials:
    """The account this process connects with: FLEETPULSE_MQTT_USERNAME/PASSWORD; a service
    account's missing password comes from the local secrets file, and so does the whole
    `account` (the process's own, e.g. "ingest") when no username is set."""
    username = settings.mqtt_username
    password = settings.mqtt_password.get_secret_value()
    if username and password:
        return MqttCredentials(username, password)
    if not username and account is None:
        raise CredentialsError(
            "FLEETPULSE_MQTT_USERNAME is empty: the broker refuses anonymous clients; "
            "set it (and FLEETPULSE_MQTT_PASSWORD) to this process's service account"
        )
    name = username or account
    if name in SERVICE_ACCOUNTS:
        return load_service_credentials(settings.data_dir, name)
    raise CredentialsError(f"FLEETPULSE_MQTT_PASSWORD is empty for MQTT user {username!r}")


def admin_credentials(settings: Settings) -> MqttCredentials:
    """The dynamic-security admin: FLEETPULSE_MQTT_ADMIN_* or the local secrets file."""
    password = settings.mqtt_admin_password.get_secret_value()
    if password:
        return MqttCredentials(settings.mqtt_admin_username, password)
    return load_service_credentials(settings.data_dir, "admin")


def _read_secrets(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"cannot read the MQTT secrets file {path}: {exc}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise CredentialsError(f"{path} must be a JSON object of account name to password")
    return data


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)
