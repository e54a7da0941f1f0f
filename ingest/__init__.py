"""MQTT -> TimescaleDB: every fix and event, batched, acknowledged only after commit.

Run it with `python -m ingest`; docs/protocol.md describes what it accepts.
"""
