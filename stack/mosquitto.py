"""A Mosquitto broker started from the repository's mosquitto.conf template."""

from __future__ import annotations

import getpass
import shutil
import signal
import string
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from config.settings import PROJECT_ROOT
from stack.errors import StackError
from stack.process import ensure_port_free, port_accepts, read_pid, stop_pid, wait_until

CONFIG_TEMPLATE = PROJECT_ROOT / "mosquitto.conf"


def mosquitto_binary() -> str:
    for candidate in ("mosquitto", "/usr/sbin/mosquitto"):
        found = shutil.which(candidate)
        if found:
            return found
    raise StackError("mosquitto is not installed; run `make setup` (apt package mosquitto)")


def render_config(*, data_dir: Path, run_dir: Path, host: str, port: int, user: str) -> str:
    template = string.Template(CONFIG_TEMPLATE.read_text())
    try:
        return template.substitute(
            data_dir=data_dir, run_dir=run_dir, mqtt_host=host, mqtt_port=port, user=user
        )
    except (KeyError, ValueError) as exc:
        raise StackError(f"{CONFIG_TEMPLATE} has an unknown placeholder: {exc}") from None


@dataclass
class MosquittoServer:
    """One broker whose persistence, rendered config, pid file and log live under `root`."""

    root: Path
    port: int
    host: str = "127.0.0.1"
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.root / "mosquitto"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def config_path(self) -> Path:
        return self.run_dir / "mosquitto.conf"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "mosquitto.pid"

    @property
    def log_path(self) -> Path:
        return self.root / "log" / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def running_pid(self) -> int | None:
        return read_pid(self.pid_file)

    def start(self, *, timeout: float = 15.0) -> None:
        if self.running_pid() is not None:
            raise StackError(f"Mosquitto is already running (pid {self.running_pid()})")
        ensure_port_free(self.host, self.port, "FLEETPULSE_MQTT_PORT")
        for folder in (self.data_dir, self.run_dir, self.log_path.parent):
            folder.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            render_config(
                data_dir=self.data_dir,
                run_dir=self.run_dir,
                host=self.host,
                port=self.port,
                user=getpass.getuser(),
            )
        )
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

        def up() -> bool:
            if self._process is not None and self._process.poll() is not None:
                raise StackError(
                    f"Mosquitto exited with status {self._process.returncode}; see {self.log_path}"
                )
            return port_accepts(self.host, self.port)

        wait_until(up, timeout=timeout, what=f"Mosquitto on {self.host}:{self.port}")

    def stop(self, *, timeout: float = 15.0) -> None:
        """Stop cleanly (SIGTERM makes Mosquitto save its persistence file first)."""
        pid = self.running_pid() or (self._process.pid if self._process else None)
        if pid is not None:
            stop_pid(pid, sig=signal.SIGTERM, timeout=timeout, name="Mosquitto")
        if self._process is not None:
            self._process.wait()
            self._process = None

    def kill(self) -> None:
        """Crash the broker (SIGKILL), as a fault-injection test wants."""
        pid = self.running_pid() or (self._process.pid if self._process else None)
        if pid is not None:
            stop_pid(pid, sig=signal.SIGKILL, timeout=5, name="Mosquitto")
        if self._process is not None:
            self._process.wait()
            self._process = None
