"""A secured Mosquitto broker started from the repository's mosquitto.conf template."""

from __future__ import annotations

import getpass
import shutil
import signal
import string
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from broker.accounts import MqttCredentials, ServiceAccount, accounts_for, ensure_service_secrets
from broker.acl import service_acls
from broker.bootstrap import BootstrapReport, bootstrap_broker
from broker.dynsec import BrokerAdminError, BrokerEndpoint, DynsecControl
from broker.dynsec_config import ensure_admin_password, find_plugin, write_initial_config
from broker.tls import TlsError, TlsFiles, configured_tls_files, ensure_local_ca
from config.settings import PROJECT_ROOT, Settings
from stack.errors import StackError
from stack.process import (
    ensure_port_free,
    free_port,
    port_accepts,
    read_pid,
    wait_until,
)
from stack.server import ManagedServer

CONFIG_TEMPLATE = PROJECT_ROOT / "mosquitto.conf"


def mosquitto_binary() -> str:
    for candidate in ("mosquitto", "/usr/sbin/mosquitto"):
        found = shutil.which(candidate)
        if found:
            return found
    raise StackError("mosquitto is not installed; run `make setup` (apt package mosquitto)")


WEBSOCKETS_LISTENER = """
# MQTT over WebSockets, loopback only: the reference for the bridge benchmark. Without
# socket_domain ipv4 a websockets listener bound to 127.0.0.1 listens on every interface.
listener {port} 127.0.0.1
protocol websockets
socket_domain ipv4
"""


@dataclass(frozen=True)
class BrokerConfig:
    """What the rendered configuration needs besides the plain listener."""

    dynsec_plugin: Path
    dynsec_config: Path
    tls_port: int
    tls_host: str
    tls: TlsFiles
    websockets_port: int = 0


def render_config(
    *, data_dir: Path, run_dir: Path, host: str, port: int, user: str, broker: BrokerConfig
) -> str:
    template = string.Template(CONFIG_TEMPLATE.read_text())
    websockets = (
        WEBSOCKETS_LISTENER.format(port=broker.websockets_port) if broker.websockets_port else ""
    )
    try:
        return template.substitute(
            data_dir=data_dir,
            run_dir=run_dir,
            mqtt_host=host,
            mqtt_port=port,
            user=user,
            dynsec_plugin=broker.dynsec_plugin,
            dynsec_config=broker.dynsec_config,
            mqtt_tls_port=broker.tls_port,
            mqtt_tls_host=broker.tls_host,
            tls_cafile=broker.tls.cafile,
            tls_certfile=broker.tls.certfile,
            tls_keyfile=broker.tls.keyfile,
            websockets_listener=websockets,
        )
    except (KeyError, ValueError) as exc:
        raise StackError(f"{CONFIG_TEMPLATE} has an unknown placeholder: {exc}") from None


@dataclass
class MosquittoServer(ManagedServer):
    """One secured broker whose persistence, dynamic-security file, TLS files, secrets,
    rendered config, pid file and log live under `root`.

    `start` bootstraps dynamic security: an admin on first start, then the service roles and
    accounts (secrets in `<root>/secrets/`). Devices added later survive restarts."""

    name: ClassVar[str] = "Mosquitto"
    clean_stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    root: Path
    port: int
    host: str = "127.0.0.1"
    # None picks a free port at start (tests); the TLS listener is always there.
    tls_port: int | None = None
    tls_host: str = "127.0.0.1"
    tls_files: TlsFiles | None = None
    websockets_port: int = 0
    topic_prefix: str = "fleet"
    environment: str = "local"
    dynsec_plugin: Path | None = None
    last_bootstrap: BootstrapReport | None = field(default=None, init=False, repr=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> MosquittoServer:
        try:
            tls_files = configured_tls_files(settings)
        except TlsError as exc:
            raise StackError(str(exc)) from None
        return cls(
            settings.data_dir,
            settings.mqtt_port,
            host=settings.mqtt_host,
            tls_port=settings.mqtt_tls_port,
            tls_host=settings.mqtt_tls_host,
            tls_files=tls_files,
            websockets_port=settings.mqtt_websockets_port,
            topic_prefix=settings.topic_prefix,
            environment=settings.environment,
            dynsec_plugin=settings.mqtt_dynsec_plugin,
        )

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
    def dynsec_path(self) -> Path:
        return self.data_dir / "dynamic-security.json"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "mosquitto.pid"

    @property
    def log_path(self) -> Path:
        return self.root / "log" / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"mqtts://{self.tls_host or '0.0.0.0'}:{self.tls_port}"

    @property
    def endpoint(self) -> BrokerEndpoint:
        return BrokerEndpoint(self.host, self.port)

    @property
    def cafile(self) -> Path:
        return (self.tls_files or TlsFiles(*self._local_tls_paths())).cafile

    def _local_tls_paths(self) -> tuple[Path, Path, Path]:
        return (self.tls_dir / "ca.crt", self.tls_dir / "server.crt", self.tls_dir / "server.key")

    def accounts(self) -> dict[ServiceAccount, MqttCredentials]:
        """The service accounts' credentials (created on first use)."""
        return ensure_service_secrets(self.root, accounts=accounts_for(self.environment))

    def credentials(self, account: ServiceAccount) -> MqttCredentials:
        return self.accounts()[account]

    def running_pid(self) -> int | None:
        return read_pid(self.pid_file)

    def broker_config(self) -> BrokerConfig:
        """Everything the configuration refers to, created when missing: the plugin's first
        file with the admin in it, and the local CA."""
        try:
            plugin = find_plugin(self.dynsec_plugin)
        except BrokerAdminError as exc:
            raise StackError(str(exc)) from None
        admin = self.credentials("admin")
        try:
            created = write_initial_config(
                self.dynsec_path,
                admin=admin,
                admin_acls=service_acls("admin", prefix=self.topic_prefix),
            )
            if not created and self.running_pid() is None:
                ensure_admin_password(self.dynsec_path, admin=admin)
        except (BrokerAdminError, OSError, ValueError) as exc:
            raise StackError(f"dynamic-security file {self.dynsec_path}: {exc}") from None
        tls = self.tls_files or ensure_local_ca(self.tls_dir)
        if self.tls_port is None:
            self.tls_port = free_port(self.tls_host or "127.0.0.1")
        return BrokerConfig(
            dynsec_plugin=plugin,
            dynsec_config=self.dynsec_path,
            tls_port=self.tls_port,
            tls_host=self.tls_host,
            tls=tls,
            websockets_port=self.websockets_port,
        )

    def start(self, *, timeout: float = 15.0) -> None:
        if self.running_pid() is not None:
            raise StackError(f"Mosquitto is already running (pid {self.running_pid()})")
        ensure_port_free(self.host, self.port, "FLEETPULSE_MQTT_PORT")
        if self.tls_port is not None:
            ensure_port_free(self.tls_host, self.tls_port, "FLEETPULSE_MQTT_TLS_PORT")
        if self.websockets_port:
            ensure_port_free("127.0.0.1", self.websockets_port, "FLEETPULSE_MQTT_WEBSOCKETS_PORT")
        for folder in (self.data_dir, self.run_dir, self.log_path.parent):
            folder.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            render_config(
                data_dir=self.data_dir,
                run_dir=self.run_dir,
                host=self.host,
                port=self.port,
                user=getpass.getuser(),
                broker=self.broker_config(),
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
        self.last_bootstrap = self.bootstrap()

    def bootstrap(self) -> BootstrapReport:
        """Bring dynamic security to the wanted state (idempotent; devices are kept)."""
        accounts = self.accounts()
        try:
            with DynsecControl(self.endpoint, accounts["admin"]) as control:
                return bootstrap_broker(
                    control,
                    accounts=accounts,
                    topic_prefix=self.topic_prefix,
                )
        except BrokerAdminError as exc:
            raise StackError(f"could not bootstrap the broker's dynamic security: {exc}") from exc

    def stop(self, *, timeout: float = 15.0) -> None:
        """Stop cleanly (SIGTERM makes Mosquitto save its persistence file first)."""
        super().stop(timeout=timeout)
