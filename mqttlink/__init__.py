"""What every process's MQTT (and database) connection loop shares: reconnect backoff."""

from mqttlink.backoff import Backoff

__all__ = ["Backoff"]
