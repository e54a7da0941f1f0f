"""Real Mosquitto and PostgreSQL instances for tests, on free ports in temporary folders.

The broker is the secured one of the stack: no anonymous clients, dynamic security with the
service accounts admin, ingest, bridge, api and loadgen (publishes as any device; local only),
and a TLS listener with a generated CA. `Services.credentials(account)` hands out an
account, `Services.provision_device(...)` creates device credentials.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from broker.accounts import MqttCredentials, ServiceAccount, process_environment
from broker.dynsec import DynsecControl
from broker.provisioning import DeviceCredentials, DeviceProvisioner
from stack import MosquittoServer, PostgresServer
from stack.process import free_port
from store import apply_migrations


@dataclass
class Services:
    root: Path
    mosquitto: MosquittoServer
    postgres: PostgresServer

    @property
    def dsn(self) -> str:
        return self.postgres.dsn

    @property
    def cafile(self) -> Path:
        return self.mosquitto.cafile

    def credentials(self, account: ServiceAccount) -> MqttCredentials:
        return self.mosquitto.credentials(account)

    def mqtt_args(self, account: ServiceAccount) -> list[str]:
        """Connection options for mosquitto_pub / mosquitto_sub as a service account."""
        credentials = self.credentials(account)
        return [
            "-h",
            self.mosquitto.host,
            "-p",
            str(self.mosquitto.port),
            "-u",
            credentials.username,
            "-P",
            credentials.password,
        ]

    def environment(self, account: ServiceAccount | None = None) -> dict[str, str]:
        """FLEETPULSE_* variables that point a process at these services, with the MQTT
        account of `account` (ingest, bridge, api, ...) when given."""
        env = {
            "FLEETPULSE_DATA_DIR": str(self.root),
            "FLEETPULSE_MQTT_HOST": self.mosquitto.host,
            "FLEETPULSE_MQTT_PORT": str(self.mosquitto.port),
            "FLEETPULSE_MQTT_TLS_PORT": str(self.mosquitto.tls_port),
            "FLEETPULSE_MQTT_TLS_HOST": self.mosquitto.tls_host,
            "FLEETPULSE_POSTGRES_PORT": str(self.postgres.port),
            "FLEETPULSE_DATABASE_URL": self.postgres.dsn,
            "FLEETPULSE_TOPIC_PREFIX": self.mosquitto.topic_prefix,
        }
        if account is not None:
            env.update(process_environment(self.root, account))
        return env

    def provisioner(self) -> DeviceProvisioner:
        """Device provisioning against these services (close it, or use it in `with`)."""
        control = DynsecControl(self.mosquitto.endpoint, self.credentials("admin"))
        return DeviceProvisioner(
            dsn=self.dsn, control=control, topic_prefix=self.mosquitto.topic_prefix
        )

    def provision_device(self, kind: str, owner_id: str) -> DeviceCredentials:
        with self.provisioner() as provisioner:
            return provisioner.create(kind=kind, owner_id=owner_id)


@contextmanager
def running_services(*, migrate: bool = True) -> Iterator[Services]:
    root = Path(tempfile.mkdtemp(prefix="fleetpulse-test-"))
    services = Services(
        root=root,
        mosquitto=MosquittoServer(root, free_port(), tls_port=free_port()),
        postgres=PostgresServer(root, free_port()),
    )
    try:
        services.mosquitto.start()
        services.postgres.start()
        if migrate:
            apply_migrations(services.dsn)
        yield services
    finally:
        try:
            services.postgres.stop()
        finally:
            services.mosquitto.stop()
            shutil.rmtree(root, ignore_errors=True)
