"""The fleetpulse processes `make run` supervises beside the servers (ingest, later bridge, api).

Each runs as `python -m <module>` in its own session (so Ctrl-C reaches only the supervisor,
which stops them in order), with its output in `<data_dir>/log/<name>.log`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from broker.accounts import ServiceAccount, process_environment
from config import Settings


@dataclass
class ChildProcess:
    name: str
    module: str
    log_path: Path
    pid_file: Path
    # The MQTT service account the child connects with, read from the local secrets file
    # (its username and password; for the api also the dynamic-security admin).
    account: ServiceAccount | None = None
    data_dir: Path | None = None
    args: tuple[str, ...] = ()
    # Output to the supervisor's terminal instead of the log (the demo's status lines).
    console: bool = False
    # An essential child's exit stops the stack; the demo's does not.
    essential: bool = True
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = os.environ.copy()
        if self.account is not None and self.data_dir is not None:
            for key, value in process_environment(self.data_dir, self.account).items():
                env.setdefault(key, value)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", self.module, *self.args],
                stdout=None if self.console else log,
                stderr=None if self.console else subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(f"{self._process.pid}\n")

    def exit_status(self) -> int | None:
        """The exit status once it has exited; None while it runs (or was never started)."""
        return self._process.poll() if self._process is not None else None

    def stop(self, *, timeout: float) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit status."""
        if self._process is None:
            return None
        process = self._process
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.pid_file.unlink(missing_ok=True)
        return process.returncode


def fleet_processes(settings: Settings) -> list[ChildProcess]:
    """What `make run` starts after the servers and migrations, in start order.

    Add the bridge and the API here; they are stopped in reverse order, before the servers."""
    log_dir, run_dir = settings.data_dir / "log", settings.data_dir / "run"
    return [
        ChildProcess(
            "ingest",
            "ingest",
            log_dir / "ingest.log",
            run_dir / "ingest.pid",
            account="ingest",
            data_dir=settings.data_dir,
        ),
        ChildProcess(
            "bridge",
            "bridge",
            log_dir / "bridge.log",
            run_dir / "bridge.pid",
            account="bridge",
            data_dir=settings.data_dir,
        ),
        ChildProcess(
            "api",
            "api",
            log_dir / "api.log",
            run_dir / "api.pid",
            account="api",
            data_dir=settings.data_dir,
        ),
    ]


def stop_timeout(settings: Settings) -> float:
    """How long a child may take to drain before it is killed."""
    return (
        max(
            settings.ingest_drain_timeout_s,
            settings.bridge_drain_timeout_s,
            settings.api_drain_timeout_s,
        )
        + 10
    )


@dataclass(frozen=True)
class DemoFleet:
    """What `make run` simulates: `make run COURIERS=500 VEHICLES=20 RATE=30 SEED=7`."""

    couriers: int = 25
    vehicles: int = 5
    orders_per_minute: float = 12.0
    seed: int | None = None
    time_scale: float = 1.0

    def sim_args(self) -> tuple[str, ...]:
        interval = 60.0 / self.orders_per_minute if self.orders_per_minute > 0 else 0.0
        args = [
            "demo",
            "--couriers",
            str(self.couriers),
            "--vehicles",
            str(self.vehicles),
            "--order-interval",
            f"{interval:g}",
            "--first-customer",
            DEMO_CUSTOMER,
            "--time-scale",
            f"{self.time_scale:g}",
        ]
        if self.seed is not None:
            args += ["--seed", str(self.seed)]
        return tuple(args)


# The customer whose order the demo creates first, so the printed customer token has one.
DEMO_CUSTOMER = "alice"


def demo_process(settings: Settings, fleet: DemoFleet) -> ChildProcess:
    """The simulator with its demo driver; prints its status lines to the terminal."""
    run_dir = settings.data_dir / "run"
    return ChildProcess(
        "sim",
        "sim",
        settings.data_dir / "log" / "sim.log",
        run_dir / "sim.pid",
        args=fleet.sim_args(),
        console=True,
        essential=False,
    )
