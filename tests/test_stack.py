from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from broker.accounts import load_service_credentials
from config.settings import PROJECT_ROOT
from stack.errors import PortInUseError
from stack.process import free_port, pid_alive
from tests.services import Services, running_services


def retained_message(services: Services, topic: str) -> str:
    result = subprocess.run(
        ["mosquitto_sub", *services.mqtt_args("bridge"), "-t", topic, "-C", "1", "-W", "5"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip()


def test_stack_restarts_with_its_data(unique: str) -> None:
    with running_services() as services:
        services.mosquitto.stop()
        services.mosquitto.start()
        with psycopg.connect(services.dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO couriers (id, name) VALUES (%s, 'Kept Across Restarts')", (unique,)
            )
        subprocess.run(
            [
                "mosquitto_pub",
                *services.mqtt_args("loadgen"),
                "-t",
                f"fleet/couriers/{unique}/presence",
                "-m",
                "retained-value",
                "-r",
                "-q",
                "1",
            ],
            check=True,
        )
        postgres_pid = services.postgres.running_pid()
        mosquitto_pid = services.mosquitto.running_pid()
        assert postgres_pid is not None
        assert mosquitto_pid is not None

        services.postgres.stop()
        services.mosquitto.stop()
        assert not pid_alive(postgres_pid)
        assert not pid_alive(mosquitto_pid)
        assert services.postgres.running_pid() is None
        assert services.mosquitto.running_pid() is None

        services.mosquitto.start()
        services.postgres.start()
        with psycopg.connect(services.dsn) as conn:
            row = conn.execute("SELECT name FROM couriers WHERE id = %s", (unique,)).fetchone()
        assert row == ("Kept Across Restarts",)
        assert retained_message(services, f"fleet/couriers/{unique}/presence") == "retained-value"


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    from stack import MosquittoServer

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} .*FLEETPULSE_MQTT_PORT"):
            MosquittoServer(tmp_path, port).start()


def wait_for_line(process: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    assert process.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"no line with {needle!r} within {timeout} s; got:\n{''.join(seen)}")


def test_stack_cli_up_twice_and_down(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "FLEETPULSE_DATA_DIR": str(tmp_path / "var"),
        "FLEETPULSE_MQTT_PORT": str(free_port()),
        "FLEETPULSE_MQTT_TLS_PORT": str(free_port()),
        "FLEETPULSE_MQTT_TLS_HOST": "127.0.0.1",
        "FLEETPULSE_POSTGRES_PORT": str(free_port()),
        "FLEETPULSE_INGEST_METRICS_PORT": str(free_port()),
        "FLEETPULSE_INGEST_CLIENT_ID": "stack-cli-test",
        "FLEETPULSE_BRIDGE_PORT": str(free_port()),
        "FLEETPULSE_API_PORT": str(free_port()),
    }
    env.pop("FLEETPULSE_DATABASE_URL", None)
    command = [sys.executable, "-m", "stack"]
    first = subprocess.Popen(
        [*command, "up"], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        lines = wait_for_line(first, "running;", timeout=90)
        output = "".join(lines)
        assert f"mqtt://127.0.0.1:{env['FLEETPULSE_MQTT_PORT']}" in output
        assert f"127.0.0.1:{env['FLEETPULSE_POSTGRES_PORT']}/fleetpulse" in output
        assert "ingest: started" in output

        # The supervised ingest worker stores what a device publishes.
        dsn = f"postgresql://postgres@127.0.0.1:{env['FLEETPULSE_POSTGRES_PORT']}/fleetpulse"
        loadgen = load_service_credentials(Path(env["FLEETPULSE_DATA_DIR"]), "loadgen")
        deadline = time.monotonic() + 30
        stored = 0
        while stored == 0 and time.monotonic() < deadline:
            subprocess.run(
                [
                    "mosquitto_pub",
                    "-p",
                    env["FLEETPULSE_MQTT_PORT"],
                    "-u",
                    loadgen.username,
                    "-P",
                    loadgen.password,
                    "-q",
                    "1",
                    "-t",
                    "fleet/couriers/stackcli/location",
                    "-m",
                    f'{{"lat": 1, "lon": 2, "ts": {time.time():.3f}}}',
                ],
                check=True,
            )
            time.sleep(0.5)
            with psycopg.connect(dsn) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM positions WHERE source_id = 'stackcli'"
                ).fetchone()
            stored = row[0] if row else 0
        assert stored > 0
        assert f"ws://127.0.0.1:{env['FLEETPULSE_BRIDGE_PORT']}/ws" in output
        assert f"http://127.0.0.1:{env['FLEETPULSE_API_PORT']}" in output

        second = subprocess.run(
            [*command, "up"],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 1
        assert "already running" in second.stdout
        assert first.poll() is None, "a second `up` must not disturb the running stack"

        status = subprocess.run(
            [*command, "status"],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        # Mosquitto, PostgreSQL, ingest, the bridge and the api.
        assert status.stdout.count("up, pid") == 5, status.stdout

        down = subprocess.run(
            [*command, "down"],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert down.returncode == 0, down.stdout + down.stderr
        assert first.wait(timeout=60) == 0
        assert first.stdout is not None
        assert "ingest: stopped (exit status 0)" in first.stdout.read()
        status = subprocess.run(
            [*command, "status"],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert status.returncode == 3
        assert "up, pid" not in status.stdout
    finally:
        if first.poll() is None:
            first.terminate()
            first.wait(timeout=60)
