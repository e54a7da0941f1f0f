"""How every process says it cannot start or go on: one line on stderr that names the
process and the problem, and the exit status (2: configuration or environment)."""

from __future__ import annotations

import sys

EXIT_CONFIG = 2


def cannot_start(program: str, problem: object, *, status: int = EXIT_CONFIG) -> int:
    """Print ``<program>: error: <problem>`` to stderr; returns `status` for sys.exit."""
    print(f"{program}: error: {problem}", file=sys.stderr, flush=True)
    return status
