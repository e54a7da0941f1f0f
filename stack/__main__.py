"""`python -m stack up|down|status|render-mosquitto`: the local stack for `make run`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from broker.accounts import secrets_path
from config import ConfigError, Settings, load_settings
from config.startup import cannot_start
from stack.children import (
    DEMO_CUSTOMER,
    ChildProcess,
    DemoFleet,
    demo_process,
    fleet_processes,
    stop_timeout,
)
from stack.errors import StackError
from stack.mosquitto import MosquittoServer, render_config
from stack.postgres import PostgresServer
from stack.process import read_pid, stop_pid
from stack.tokens import demo_tokens
from store import MigrationError, apply_migrations


def say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def describe_exit(code: int | None) -> str:
    """uvicorn re-raises the SIGTERM it handled, so a clean stop can read as -15."""
    if code is not None and code < 0:
        return f"ended by {signal.Signals(-code).name} after its shutdown"
    return f"exit status {code}"


def supervisor_pid_file(settings: Settings) -> Path:
    return settings.data_dir / "run" / "stack.pid"


def servers(settings: Settings) -> tuple[MosquittoServer, PostgresServer]:
    return (
        MosquittoServer.from_settings(settings),
        PostgresServer(settings.data_dir, settings.postgres_port),
    )


def up(settings: Settings, *, demo: DemoFleet | None = None) -> int:
    """Start the servers, then the processes; supervise until a stop; stop everything."""
    pid_file = supervisor_pid_file(settings)
    mosquitto, postgres = servers(settings)
    if _already_running(pid_file, mosquitto, postgres):
        return 1
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{os.getpid()}\n")
    stop_requested = threading.Event()

    def request_stop(_signum: int, _frame: object) -> None:
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    children: list[ChildProcess] = []
    try:
        _start_servers(settings, mosquitto, postgres)
        _start_processes(settings, children)
        _print_addresses(settings, mosquitto, postgres)
        if demo is not None:
            _start_demo(settings, demo, children)
        say("running; Ctrl-C or `make stop` stops it")
        return _supervise(settings, (mosquitto, postgres), children, stop_requested)
    except (StackError, MigrationError) as exc:
        say(f"error: {exc}")
        return 1
    finally:
        _stop_all(settings, (postgres, mosquitto), children)
        pid_file.unlink(missing_ok=True)
        say("stopped")


def _already_running(pid_file: Path, mosquitto: MosquittoServer, postgres: PostgresServer) -> bool:
    running = read_pid(pid_file)
    if running is not None:
        say(f"the stack is already running (supervisor pid {running}); `make stop` stops it")
        return True
    for server in (mosquitto, postgres):
        pid = server.running_pid()
        if pid is not None:
            say(f"{server.name} from an earlier run is still up (pid {pid}); `make stop` stops it")
            return True
    return False


def _start_servers(
    settings: Settings, mosquitto: MosquittoServer, postgres: PostgresServer
) -> None:
    say(f"data folder: {settings.data_dir}")
    say(f"starting Mosquitto on {settings.mqtt_host}:{settings.mqtt_port} ...")
    mosquitto.start()
    assert mosquitto.last_bootstrap is not None
    say(f"broker security: {mosquitto.last_bootstrap.summary()}")
    say(f"starting PostgreSQL 15 + TimescaleDB on 127.0.0.1:{settings.postgres_port} ...")
    postgres.start()
    applied = apply_migrations(postgres.dsn)
    say(f"schema: applied migrations {applied}" if applied else "schema: up to date")


def _start_processes(settings: Settings, children: list[ChildProcess]) -> None:
    for child in fleet_processes(settings):
        child.start()
        children.append(child)
        say(f"{child.name}: started (pid {child.pid}), log {child.log_path}")


def _print_addresses(
    settings: Settings, mosquitto: MosquittoServer, postgres: PostgresServer
) -> None:
    say(f"MQTT broker:  {mosquitto.url} (services), {mosquitto.tls_url} (TLS, devices)")
    say(f"TLS CA:       {mosquitto.cafile}")
    say(f"MQTT secrets: {secrets_path(settings.data_dir)}")
    say(f"database:     {postgres.dsn}")
    if settings.ingest_metrics_port:
        say(
            f"ingest metrics: http://{settings.ingest_metrics_host}:"
            f"{settings.ingest_metrics_port}/metrics"
        )
    say(f"dashboard:    http://{settings.bridge_host}:{settings.bridge_port}/ (paste a token)")
    say(f"bridge:       ws://{settings.bridge_host}:{settings.bridge_port}/ws")
    say(f"REST API:     http://{settings.api_host}:{settings.api_port} (docs at /docs)")
    say(f"logs:         {settings.data_dir / 'log'}")
    for role, token in demo_tokens(settings, customer=DEMO_CUSTOMER).items():
        say(f"token {role}: {token}")


def _start_demo(settings: Settings, demo: DemoFleet, children: list[ChildProcess]) -> None:
    sim = demo_process(settings, demo)
    sim.start()
    children.append(sim)
    say(
        f"demo: {demo.couriers} couriers, {demo.vehicles} vehicles, "
        f"{demo.orders_per_minute:g} orders/min (pid {sim.pid})"
    )


def _supervise(
    settings: Settings,
    servers: tuple[MosquittoServer, PostgresServer],
    children: list[ChildProcess],
    stop_requested: threading.Event,
) -> int:
    """Until a stop is requested: a server or an essential child that exits stops the
    stack with status 1; a non-essential child (the demo) that exits is let go."""
    status = 0
    while not stop_requested.wait(1.0):
        for server in servers:
            if server.running_pid() is None:
                say(f"{server.name} exited unexpectedly; see {settings.data_dir / 'log'}")
                stop_requested.set()
                status = 1
        for child in list(children):
            code = child.exit_status()
            if code is None:
                continue
            say(f"{child.name} exited with status {code}; see {child.log_path}")
            if child.essential:
                stop_requested.set()
                status = 1
            else:
                children.remove(child)
    return status


def _stop_all(
    settings: Settings,
    servers: tuple[PostgresServer, MosquittoServer],
    children: list[ChildProcess],
) -> None:
    say("stopping ...")
    for child in reversed(children):
        running = child.exit_status() is None
        code = child.stop(timeout=stop_timeout(settings))
        if running:
            say(f"{child.name}: stopped ({describe_exit(code)})")
    for server in servers:
        try:
            server.stop()
        except StackError as exc:
            say(f"warning: {exc}")


def down(settings: Settings) -> int:
    supervisor = read_pid(supervisor_pid_file(settings))
    if supervisor is not None:
        say(f"asking the running stack (pid {supervisor}) to stop ...")
        stop_pid(supervisor, sig=signal.SIGTERM, timeout=90, name="the stack supervisor")
    for child in reversed([*fleet_processes(settings), demo_process(settings, DemoFleet())]):
        leftover = read_pid(child.pid_file)
        if leftover is not None:
            say(f"stopping {child.name} (pid {leftover}) ...")
            stop_pid(leftover, sig=signal.SIGTERM, timeout=stop_timeout(settings), name=child.name)
        child.pid_file.unlink(missing_ok=True)
    mosquitto, postgres = servers(settings)
    for server in (postgres, mosquitto):
        if server.running_pid() is not None:
            say(f"stopping {server.name} ...")
            server.stop()
    say("stopped")
    return 0


def status(settings: Settings) -> int:
    mosquitto, postgres = servers(settings)
    any_up = False
    for server, address in ((mosquitto, mosquitto.url), (postgres, postgres.dsn)):
        pid = server.running_pid()
        any_up = any_up or pid is not None
        say(f"{server.name:<11} {'up, pid ' + str(pid) if pid else 'down':<16} {address}")
    for child in fleet_processes(settings):
        pid = read_pid(child.pid_file)
        say(f"{child.name:<11} {'up, pid ' + str(pid) if pid else 'down':<16} {child.log_path}")
    return 0 if any_up else 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "render-mosquitto"])
    parser.add_argument(
        "--demo", action="store_true", help="with `up`: also run the simulated fleet (make run)"
    )
    parser.add_argument("--couriers", type=int, default=DemoFleet.couriers)
    parser.add_argument("--vehicles", type=int, default=DemoFleet.vehicles)
    parser.add_argument("--orders-per-minute", type=float, default=DemoFleet.orders_per_minute)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="demo fast-forward (simulated s per s)"
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        return cannot_start("stack", exc)
    try:
        if args.command == "up":
            fleet = DemoFleet(
                args.couriers, args.vehicles, args.orders_per_minute, args.seed, args.time_scale
            )
            return up(settings, demo=fleet if args.demo else None)
        if args.command == "down":
            return down(settings)
        if args.command == "status":
            return status(settings)
        mosquitto, _ = servers(settings)
        print(
            render_config(
                data_dir=mosquitto.data_dir,
                run_dir=mosquitto.run_dir,
                host=settings.mqtt_host,
                port=settings.mqtt_port,
                user="mosquitto",
                broker=mosquitto.broker_config(),
            ),
            end="",
        )
        return 0
    except StackError as exc:
        return cannot_start("stack", exc, status=1)


if __name__ == "__main__":
    sys.exit(main())
