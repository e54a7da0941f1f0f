"""Broker security end to end with the real ingest worker on its service account: a device's
fix on its own topic is stored; one published on another device's topic is denied and never
reaches the database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from config.settings import PROJECT_ROOT
from tests.mqtt5 import NOT_AUTHORIZED, Mqtt5Client
from tests.services import Services


@pytest.fixture
def ingest_worker(services: Services, unique: str) -> Iterator[list[str]]:
    """`python -m ingest` in a shared group of its own; yields its log lines as they come.
    No FLEETPULSE_MQTT_* variables: it finds the ingest account in the data folder's secrets,
    as a worker started by hand next to the local stack does."""
    env = {
        **os.environ,
        **services.environment(),
        "FLEETPULSE_INGEST_METRICS_PORT": "0",
        "FLEETPULSE_INGEST_CLIENT_ID": f"ingest-{unique}",
        "FLEETPULSE_INGEST_SHARED_GROUP": f"g{unique}",
        "FLEETPULSE_INGEST_SESSION_EXPIRY_S": "0",
    }
    env.pop("FLEETPULSE_MQTT_USERNAME", None)
    env.pop("FLEETPULSE_MQTT_PASSWORD", None)
    worker = subprocess.Popen(
        [sys.executable, "-m", "ingest"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert worker.stderr is not None
        lines.extend(worker.stderr)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not any("subscribed to" in line for line in lines):
            assert worker.poll() is None, "ingest exited:\n" + "".join(lines)
            assert time.monotonic() < deadline, "ingest did not subscribe:\n" + "".join(lines)
            time.sleep(0.05)
        time.sleep(0.3)  # the SUBACK follows the log line
        yield lines
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
        reader.join(timeout=5)


def stored(services: Services, source_id: str) -> list[tuple[object, ...]]:
    with psycopg.connect(services.dsn) as conn:
        return conn.execute(
            "SELECT source_kind, source_id, lat, lon FROM positions WHERE source_id = %s",
            (source_id,),
        ).fetchall()


def test_own_fix_is_stored_and_a_forged_one_is_not(
    services: Services, unique: str, ingest_worker: list[str]
) -> None:
    device = services.provision_device("courier", f"c-{unique}")
    services.provision_device("courier", f"victim-{unique}")
    now = datetime.now(UTC).timestamp()
    with Mqtt5Client(
        host=services.mosquitto.host,
        port=services.mosquitto.port,
        username=device.username,
        password=device.password,
        client_id=device.client_id,
    ) as client:
        assert client.open() == 0
        forged = json.dumps({"lat": 1.0, "lon": 1.0, "ts": now})
        assert client.publish(f"fleet/couriers/victim-{unique}/location", forged) == NOT_AUTHORIZED
        own = json.dumps({"lat": 52.52, "lon": 13.405, "ts": now})
        assert client.publish(f"fleet/couriers/c-{unique}/location", own) == 0
    deadline = time.monotonic() + 20
    while not stored(services, f"c-{unique}"):
        assert time.monotonic() < deadline, "the fix was not stored:\n" + "".join(ingest_worker)
        time.sleep(0.1)
    assert stored(services, f"c-{unique}") == [("courier", f"c-{unique}", 52.52, 13.405)]
    assert stored(services, f"victim-{unique}") == []
    with psycopg.connect(services.dsn) as conn:
        dead = conn.execute(
            "SELECT count(*) FROM dead_letters WHERE topic LIKE %s", (f"%victim-{unique}%",)
        ).fetchone()
    assert dead == (0,)


def test_ingest_without_an_account_stops_with_a_clear_error(
    services: Services, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        **services.environment(),
        "FLEETPULSE_DATA_DIR": str(tmp_path),  # no secrets file here
        "FLEETPULSE_INGEST_METRICS_PORT": "0",
    }
    env.pop("FLEETPULSE_MQTT_USERNAME", None)
    env.pop("FLEETPULSE_MQTT_PASSWORD", None)
    result = subprocess.run(
        [sys.executable, "-m", "ingest"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "no MQTT secrets" in result.stderr
    assert "Traceback" not in result.stderr
