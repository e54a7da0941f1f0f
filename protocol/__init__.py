"""The wire contract shared by devices, ingest, bridge and api: topics and payloads."""
