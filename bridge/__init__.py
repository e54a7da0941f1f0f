"""The live relay: MQTT in, per-role filtered WebSocket frames out (`python -m bridge`)."""
