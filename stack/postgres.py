"""A PostgreSQL 15 cluster with TimescaleDB preloaded, kept in a folder of its own."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import psycopg
from psycopg import sql

from stack.errors import StackError
from stack.process import (
    chown_tree,
    ensure_port_free,
    make_traversable,
    read_pid,
    run_as,
    service_user,
    wait_until,
)
from stack.server import ManagedServer

PG_BIN = Path("/usr/lib/postgresql/15/bin")

# Written on every start, so a changed port or tuning takes effect after a restart.
SERVER_SETTINGS = """\
# Managed by fleetpulse (stack/postgres.py); rewritten on every start.
listen_addresses = '{host}'
port = {port}
unix_socket_directories = ''
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
max_connections = 300
shared_buffers = 512MB
work_mem = 16MB
maintenance_work_mem = 256MB
effective_cache_size = 4GB
max_wal_size = 4GB
checkpoint_timeout = 15min
wal_compression = on
jit = off
logging_collector = off
log_min_messages = warning
log_min_error_statement = error
"""


def pg_binary(name: str) -> str:
    path = PG_BIN / name
    if not path.exists():
        raise StackError(
            f"{path} is missing; install PostgreSQL 15 with `make setup` (package postgresql-15)"
        )
    return str(path)


def timescaledb_installed() -> bool:
    return Path("/usr/share/postgresql/15/extension/timescaledb.control").exists()


@dataclass
class PostgresServer(ManagedServer):
    """One cluster under `root/postgres`, listening on TCP only, database `fleetpulse`."""

    name: ClassVar[str] = "PostgreSQL"
    # Fast shutdown: roll back open transactions, checkpoint, exit.
    clean_stop_signal: ClassVar[signal.Signals] = signal.SIGINT

    root: Path
    port: int
    host: str = "127.0.0.1"
    database: str = "fleetpulse"
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.root / "postgres"

    @property
    def log_path(self) -> Path:
        return self.root / "log" / "postgres.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{self.database}"

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def running_pid(self) -> int | None:
        return read_pid(self.data_dir / "postmaster.pid")

    def _initdb(self, user: str | None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            make_traversable(self.data_dir)
            chown_tree(self.data_dir, user)
        self.data_dir.chmod(0o700)
        result = subprocess.run(
            [
                pg_binary("initdb"),
                "--pgdata",
                str(self.data_dir),
                "--username",
                "postgres",
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C.UTF-8",
            ],
            **run_as(user),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"initdb failed in {self.data_dir}:\n{result.stderr.strip()}")
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude_if_exists = 'fleetpulse.conf'\n")

    def start(self, *, timeout: float = 60.0) -> None:
        if not timescaledb_installed():
            raise StackError("the TimescaleDB extension is not installed; run `make setup`")
        if self.running_pid() is not None:
            raise StackError(f"PostgreSQL is already running (pid {self.running_pid()})")
        ensure_port_free(self.host, self.port, "FLEETPULSE_POSTGRES_PORT")
        user = service_user()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(user)
        settings_path = self.data_dir / "fleetpulse.conf"
        settings_path.write_text(SERVER_SETTINGS.format(host=self.host, port=self.port))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if user is not None:
            chown_tree(self.data_dir, user)
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [pg_binary("postgres"), "-D", str(self.data_dir)],
            **run_as(user),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

        def up() -> bool:
            if self._process is not None and self._process.poll() is not None:
                raise StackError(
                    f"PostgreSQL exited with status {self._process.returncode}; see {self.log_path}"
                )
            try:
                with psycopg.connect(self.admin_dsn, connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                return False

        wait_until(up, timeout=timeout, what=f"PostgreSQL on {self.host}:{self.port}", poll=0.1)
        self._create_database()

    def _create_database(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))

    def kill(self) -> None:
        """Crash the postmaster (SIGKILL); the next start runs crash recovery."""
        super().kill()
        # Orphaned backends keep the shared memory segment; wait until they are gone.
        with contextlib.suppress(StackError):
            wait_until(
                lambda: (
                    not any(_is_backend_of(proc, self.data_dir) for proc in Path("/proc").iterdir())
                ),
                timeout=10,
                what="PostgreSQL backends to exit",
            )


def _is_backend_of(proc: Path, data_dir: Path) -> bool:
    if not proc.name.isdigit():
        return False
    try:
        return (proc / "cwd").resolve() == data_dir.resolve() and "postgres" in (
            proc / "comm"
        ).read_text()
    except OSError:
        return False
