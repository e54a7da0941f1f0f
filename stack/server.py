"""What the local Mosquitto and PostgreSQL have in common: a named server process, started
by us or found by its pid file, stopped by a signal and reaped."""

from __future__ import annotations

import signal
import subprocess
from typing import ClassVar

from stack.process import stop_pid


class ManagedServer:
    """Base of MosquittoServer and PostgresServer (dataclasses that hold `_process`)."""

    name: ClassVar[str]
    # The signal of a clean stop: Mosquitto saves its persistence on SIGTERM, PostgreSQL's
    # fast shutdown is SIGINT.
    clean_stop_signal: ClassVar[signal.Signals]
    _process: subprocess.Popen[bytes] | None

    def running_pid(self) -> int | None:
        raise NotImplementedError

    def _signal_and_reap(self, sig: signal.Signals, *, timeout: float) -> None:
        pid = self.running_pid() or (self._process.pid if self._process else None)
        if pid is not None:
            stop_pid(pid, sig=sig, timeout=timeout, name=self.name)
        if self._process is not None:
            self._process.wait()
            self._process = None

    def stop(self, *, timeout: float = 60.0) -> None:
        """Stop cleanly and wait for the process to end."""
        self._signal_and_reap(self.clean_stop_signal, timeout=timeout)

    def kill(self) -> None:
        """Crash the server (SIGKILL), as a fault-injection test wants."""
        self._signal_and_reap(signal.SIGKILL, timeout=5)
