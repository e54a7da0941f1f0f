"""The database store shared by ingest, bridge and api: schema migrations and queries."""

from store.migrate import MigrationError, apply_migrations

__all__ = ["MigrationError", "apply_migrations"]
