"""What every process's MQTT connection shares: the backoff and the reconnect loop."""

from mqttlink.backoff import Backoff
from mqttlink.reconnect import stay_connected

__all__ = ["Backoff", "stay_connected"]
