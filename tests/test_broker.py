from __future__ import annotations

import subprocess
import time

from tests.services import Services


def test_mosquitto_pub_reaches_a_subscriber(services: Services, unique: str) -> None:
    topic = f"test/{unique}/hello"
    port = str(services.mosquitto.port)
    subscriber = subprocess.Popen(
        [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            port,
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
                    "-h",
                    "127.0.0.1",
                    "-p",
                    port,
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
