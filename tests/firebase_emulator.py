"""The real Firebase Auth emulator (npm firebase-tools, installed by scripts/setup.sh into
.var/node), started offline on free ports in a temporary folder."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stack.process import free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FIREBASE_CLI = PROJECT_ROOT / ".var" / "node" / "node_modules" / ".bin" / "firebase"
PROJECT_ID = "demo-fleetpulse"


def unavailable_reason() -> str | None:
    """Why the emulator test cannot run here, or None. Only a missing node is a reason."""
    if shutil.which("node") is None:
        return "node is not installed: the Firebase Auth emulator (npm firebase-tools) needs it"
    return None


@dataclass
class AuthEmulator:
    host: str

    def _call(self, path: str, body: dict[str, Any], *, admin: bool = False) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://{self.host}/identitytoolkit.googleapis.com/v1/{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        if admin:
            # The emulator's stand-in for a service account.
            request.add_header("Authorization", "Bearer owner")
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (http only)
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    def create_user(self, email: str, password: str) -> str:
        created = self._call(
            "accounts:signUp?key=fake-api-key",
            {"email": email, "password": password, "returnSecureToken": True},
        )
        return str(created["localId"])

    def set_custom_claims(self, uid: str, claims: dict[str, str]) -> None:
        self._call(
            f"projects/{PROJECT_ID}/accounts:update",
            {"localId": uid, "customAttributes": json.dumps(claims)},
            admin=True,
        )

    def sign_in(self, email: str, password: str) -> str:
        """An ID token, as the web SDK would get it."""
        signed_in = self._call(
            "accounts:signInWithPassword?key=fake-api-key",
            {"email": email, "password": password, "returnSecureToken": True},
        )
        return str(signed_in["idToken"])


@contextlib.contextmanager
def running_auth_emulator() -> Iterator[AuthEmulator]:
    if not FIREBASE_CLI.exists():
        raise RuntimeError(f"{FIREBASE_CLI} is missing; `make setup` installs firebase-tools")
    root = Path(tempfile.mkdtemp(prefix="fleetpulse-firebase-"))
    port, hub, logging_port = free_port(), free_port(), free_port()
    (root / "firebase.json").write_text(
        json.dumps(
            {
                "emulators": {
                    "auth": {"host": "127.0.0.1", "port": port},
                    "hub": {"host": "127.0.0.1", "port": hub},
                    "logging": {"host": "127.0.0.1", "port": logging_port},
                    "ui": {"enabled": False},
                }
            }
        )
    )
    env = {
        **os.environ,
        # Keep its locator files and config out of shared folders, and stay offline.
        "TMPDIR": str(root),
        "HOME": str(root),
        "XDG_CONFIG_HOME": str(root / "config"),
        "FIREBASE_CLI_DISABLE_UPDATE_CHECK": "true",
        "NO_UPDATE_NOTIFIER": "1",
        "CI": "true",
    }
    log_path = root / "emulator.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(FIREBASE_CLI),
                "emulators:start",
                "--only",
                "auth",
                "--project",
                PROJECT_ID,
            ],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the emulator exited: {log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
                    break
            except urllib.error.HTTPError:
                break  # It answers: it is up.
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the emulator did not start: {log_path.read_text()}")
            time.sleep(0.5)
        yield AuthEmulator(f"127.0.0.1:{port}")
    finally:
        # Its own process group: firebase starts node children.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(root, ignore_errors=True)
