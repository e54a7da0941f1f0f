"""Small process and socket primitives the local services are built from."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stack.errors import PortInUseError, StackError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_port_free(host: str, port: int, variable: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise PortInUseError(host, port, variable) from None


def port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(
    condition: Callable[[], bool], *, timeout: float, what: str, poll: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """An exited child nobody has reaped yet still answers kill(pid, 0)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line.rpartition(")")[2].split()[0] == "Z"


def read_pid(path: Path) -> int | None:
    """The pid recorded in a pid file (first line), if that process still runs."""
    try:
        first_line = path.read_text().splitlines()[0].strip()
        pid = int(first_line)
    except (OSError, IndexError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def stop_pid(pid: int, *, sig: signal.Signals, timeout: float, name: str) -> None:
    """Signal a process and wait for it to go; kill it if it outlives the timeout."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            raise StackError(f"{name} (pid {pid}) did not stop within {timeout:.0f} s; killed")
        time.sleep(0.05)


def service_user() -> str | None:
    """The unprivileged account servers run as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise StackError(
            "running as root, but there is no 'postgres' user to run PostgreSQL as; "
            "install the postgresql-15 package (make setup)"
        ) from None
    return "postgres"


def run_as(user: str | None) -> dict[str, Any]:
    """subprocess keyword arguments that drop to `user` with only that user's own groups."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def make_traversable(path: Path) -> None:
    """Let other users walk down to `path` (search bit only), so a dropped-privilege server
    can reach a data folder that lives under root's checkout."""
    for ancestor in reversed(path.resolve().parents):
        mode = ancestor.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(ancestor, mode | stat.S_IXOTH)


def chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
