"""Mosquitto's dynamic-security plugin, on disk: where the plugin is, and its JSON file
before the broker's first start (the admin client and role; everything else is added live,
broker.dynsec). The plugin keeps clients, roles and ACLs in that file and rewrites it on
every change.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

from broker.accounts import MqttCredentials
from broker.acl import DEFAULT_ACL_ACCESS, Acl
from broker.dynsec import BrokerAdminError

PLUGIN_NAME = "mosquitto_dynamic_security.so"
# The plugin's own choice in 2.0.11 (sha512-pbkdf2); keeps first-boot hashes like later ones.
PBKDF2_ITERATIONS = 101
ADMIN_ROLE = "admin"


def find_plugin(configured: Path | None = None) -> Path:
    """The plugin shared object: the configured path, else where the mosquitto package put it."""
    if configured is not None:
        if not configured.is_file():
            raise BrokerAdminError(
                f"FLEETPULSE_MQTT_DYNSEC_PLUGIN={configured} does not exist; "
                f"point it at {PLUGIN_NAME}"
            )
        return configured
    try:
        listing = subprocess.run(
            ["dpkg", "-L", "mosquitto"], capture_output=True, text=True, check=False
        ).stdout
    except OSError:
        listing = ""
    candidates = [Path(line) for line in listing.splitlines() if line.endswith("/" + PLUGIN_NAME)]
    candidates += sorted(Path("/usr/lib").glob(f"*/{PLUGIN_NAME}"))
    candidates += [Path("/usr/lib") / PLUGIN_NAME, Path("/usr/local/lib") / PLUGIN_NAME]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise BrokerAdminError(
        f"cannot find Mosquitto's {PLUGIN_NAME}: install the mosquitto package (make setup) "
        "or set FLEETPULSE_MQTT_DYNSEC_PLUGIN to its path"
    )


def hash_password(password: str, *, salt: bytes | None = None) -> dict[str, Any]:
    """The plugin's stored form of a password: base64 sha512-pbkdf2 hash, salt, iterations."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": PBKDF2_ITERATIONS,
    }


def write_initial_config(path: Path, *, admin: MqttCredentials, admin_acls: list[Acl]) -> bool:
    """Create the plugin's file with only the admin in it; False when it already exists (the
    plugin owns it from then on, and devices added later live there)."""
    if path.exists():
        return False
    config = {
        "clients": [
            {
                "username": admin.username,
                "textName": "fleetpulse dynamic-security admin",
                **hash_password(admin.password),
                "roles": [{"rolename": ADMIN_ROLE}],
            }
        ],
        "roles": [{"rolename": ADMIN_ROLE, "acls": [acl.as_json() for acl in admin_acls]}],
        "defaultACLAccess": DEFAULT_ACL_ACCESS,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2)
    return True


def ensure_admin_password(path: Path, *, admin: MqttCredentials) -> bool:
    """Make the plugin's file accept the admin's current password (a lost or regenerated
    secrets file); only while the broker is stopped, since the plugin owns the file when it
    runs. True when the file was changed."""
    config = json.loads(path.read_text(encoding="utf-8"))
    for client in config.get("clients", []):
        if client.get("username") != admin.username:
            continue
        try:
            salt = base64.b64decode(client["salt"])
            matches = hash_password(admin.password, salt=salt)["password"] == client["password"]
        except (KeyError, ValueError):
            matches = False
        if matches and client.get("iterations") == PBKDF2_ITERATIONS:
            return False
        client.update(hash_password(admin.password))
        client.pop("disabled", None)
        break
    else:
        raise BrokerAdminError(
            f"{path} has no client {admin.username!r}; move the file away to start afresh "
            "(devices in it would then need new credentials)"
        )
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2)
    os.replace(temporary, path)
    return True
