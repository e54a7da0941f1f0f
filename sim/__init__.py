"""A simulated fleet: couriers and vehicles on MQTT, a dispatcher on the REST API."""
