"""The database store shared by ingest, bridge and api: schema migrations and queries."""

from store.migrate import MigrationError, apply_migrations
from store.presence import (
    Availability,
    CourierPresence,
    availability,
    last_heard,
    read_presence,
)

__all__ = [
    "Availability",
    "CourierPresence",
    "MigrationError",
    "apply_migrations",
    "availability",
    "last_heard",
    "read_presence",
]
