from __future__ import annotations

import subprocess
import time

from tests.services import Services


def test_mosquitto_pub_reaches_a_subscriber(services: Services, unique: str) -> None:
    topic = f"fleet/couriers/{unique}/location"
    subscriber = subprocess.Popen(
        [
            "mosquitto_sub",
            *services.mqtt_args("bridge"),
            "-t",
            topic,
            "-q",
            "1",
            "-C",
            "1",
            "-W",
            "20",
            "-v",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # Publish until the subscriber has subscribed and received one message.
        deadline = time.monotonic() + 15
        while subscriber.poll() is None and time.monotonic() < deadline:
            subprocess.run(
                [
                    "mosquitto_pub",
                    *services.mqtt_args("loadgen"),
                    "-t",
                    topic,
                    "-q",
                    "1",
                    "-m",
                    f"hello {unique}",
                ],
                check=True,
            )
            time.sleep(0.2)
        out, _ = subscriber.communicate(timeout=20)
    finally:
        subscriber.kill()
    assert out.strip() == f"{topic} hello {unique}"
