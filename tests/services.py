"""Real Mosquitto and PostgreSQL instances for tests, on free ports in temporary folders."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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

    def environment(self) -> dict[str, str]:
        """FLEETPULSE_* variables that point a process at these services."""
        return {
            "FLEETPULSE_DATA_DIR": str(self.root),
            "FLEETPULSE_MQTT_HOST": self.mosquitto.host,
            "FLEETPULSE_MQTT_PORT": str(self.mosquitto.port),
            "FLEETPULSE_POSTGRES_PORT": str(self.postgres.port),
            "FLEETPULSE_DATABASE_URL": self.postgres.dsn,
        }


@contextmanager
def running_services(*, migrate: bool = True) -> Iterator[Services]:
    root = Path(tempfile.mkdtemp(prefix="fleetpulse-test-"))
    services = Services(
        root=root,
        mosquitto=MosquittoServer(root, free_port()),
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
