"""The local stack: a Mosquitto broker and a PostgreSQL + TimescaleDB cluster in a data folder.

`python -m stack up` runs it for `make run`; the tests and benchmarks use the same classes
on free ports in temporary folders.
"""

from stack.errors import StackError
from stack.mosquitto import MosquittoServer
from stack.postgres import PostgresServer

__all__ = ["MosquittoServer", "PostgresServer", "StackError"]
