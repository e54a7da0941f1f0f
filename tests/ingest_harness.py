"""Running real ingest workers and real MQTT publishers against tests/services.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from config.settings import PROJECT_ROOT
from stack.process import free_port
from tests.services import Services


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


class Worker:
    """`python -m ingest` as a child process with its own client id, log and metrics port."""

    def __init__(
        self,
        services: Services,
        *,
        group: str,
        client_id: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.services = services
        self.client_id = client_id or f"test-ingest-{uuid.uuid4().hex[:8]}"
        self.metrics_port = free_port()
        self.env = {
            **os.environ,
            **services.environment("ingest"),
            "FLEETPULSE_INGEST_CLIENT_ID": self.client_id,
            "FLEETPULSE_INGEST_SHARED_GROUP": group,
            "FLEETPULSE_INGEST_METRICS_PORT": str(self.metrics_port),
            "FLEETPULSE_INGEST_SESSION_EXPIRY_S": "600",
            "FLEETPULSE_INGEST_RETRY_MAX_S": "1",
            **(extra_env or {}),
        }
        self.log_path = Path(tempfile.mkstemp(prefix="ingest-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ingest"],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self.subscribed, timeout=30, what=f"ingest worker {self.client_id} to subscribe")
        return self

    def subscribed(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"ingest exited with {self.process.returncode}:\n{self.log()}")
        return "subscribed to" in self.log()

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metric(self, name: str, labels: str = "") -> float:
        """A counter/gauge value from the worker's /metrics, e.g. metric('..._total')."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        wanted = f"{name}{{{labels}}}" if labels else name
        for line in text.splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        return 0.0

    def terminate(self, *, timeout: float = 30) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def close(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait(timeout=10)
        self.log_path.unlink(missing_ok=True)


@contextmanager
def running_worker(services: Services, *, group: str, **kwargs: object) -> Iterator[Worker]:
    worker = Worker(services, group=group, **kwargs)  # type: ignore[arg-type]
    try:
        yield worker.start()
    finally:
        worker.close()


def mosquitto_pub(services: Services, topic: str, payload: bytes | None, *, qos: int = 1) -> None:
    """One message, bytes exactly as given (None: a zero-length payload)."""
    command = [
        "mosquitto_pub",
        *services.mqtt_args("loadgen"),
        "-V",
        "mqttv5",
        "-q",
        str(qos),
        "-t",
        topic,
    ]
    if payload is None:
        subprocess.run([*command, "-n"], check=True, timeout=30)
    else:
        subprocess.run([*command, "-s"], input=payload, check=True, timeout=30)


def clear_retained(services: Services, topic: str) -> None:
    """Remove a retained message a test left, so later tests' subscriptions don't get it."""
    command = ["mosquitto_pub", *services.mqtt_args("loadgen"), "-V", "mqttv5", "-q", "1"]
    subprocess.run([*command, "-r", "-n", "-t", topic], check=True, timeout=30)


class LinePublisher:
    """`mosquitto_pub -l` at QoS 1 whose stdin stays open until close().

    mosquitto_pub exits before its in-flight messages are acknowledged once stdin ends, so the
    caller keeps it open until the receiving end (the database) has everything."""

    def __init__(self, services: Services, topic: str) -> None:
        self.process = subprocess.Popen(
            [
                "mosquitto_pub",
                *services.mqtt_args("loadgen"),
                "-V",
                "mqttv5",
                "-q",
                "1",
                "-M",
                "1000",
                "-l",
                "-t",
                topic,
            ],
            stdin=subprocess.PIPE,
        )

    def send(self, lines: list[str]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("".join(line + "\n" for line in lines).encode())
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def fix_lines(count: int, *, start: float, step: float = 0.001) -> list[str]:
    """`count` distinct native fixes, ts = start + i * step."""
    return [
        f'{{"lat":{40 + (i % 1000) / 1000:.4f},"lon":{-3 - (i % 700) / 1000:.4f},'
        f'"ts":{start + i * step:.3f},"speed":{i % 30}}}'
        for i in range(count)
    ]


def count_rows(dsn: str, sql: str, params: tuple[object, ...] = ()) -> int:
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            row = conn.execute(sql, params).fetchone()
    except psycopg.OperationalError:
        return -1
    assert row is not None
    return int(row[0])


def positions_of(dsn: str, source_id: str) -> int:
    return count_rows(dsn, "SELECT count(*) FROM positions WHERE source_id = %s", (source_id,))
