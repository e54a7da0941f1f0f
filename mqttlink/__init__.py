"""What every process's MQTT connection shares: the backoff and the reconnect loop of the
aiomqtt clients; ``mqttlink.codec`` and ``mqttlink.session`` are the sans-IO codec and the
manual-ack session of the subscriber that must not acknowledge before it commits (ingest)."""

from mqttlink.backoff import Backoff
from mqttlink.reconnect import stay_connected

__all__ = ["Backoff", "stay_connected"]
