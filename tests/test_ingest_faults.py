"""Ingest under faults: kill -9, PostgreSQL down, broker restart, two workers sharing a stream.

Everything is real: the worker is `python -m ingest`, publishers are mosquitto_pub (or paho,
where the test needs to know which messages the broker acknowledged), and the counting
happens at the receiving end, in the database.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.ingest_harness import (
    LinePublisher,
    Worker,
    count_rows,
    fix_lines,
    positions_of,
    running_worker,
    wait_until,
)
from tests.services import Services, running_services


@pytest.mark.slow
def test_kill_9_under_load_loses_nothing_and_doubles_nothing(
    services: Services, unique: str
) -> None:
    source = f"k{unique}"
    total = 20_000
    lines = fix_lines(total, start=time.time() - 7200, step=0.01)
    worker = Worker(services, group=f"g{unique}").start()
    publisher = LinePublisher(services, f"fleet/vehicles/{source}/location")
    try:
        publisher.send(lines[: total // 2])
        wait_until(lambda: positions_of(services.dsn, source) >= 1000, timeout=60, what="1000 rows")
        worker.kill()  # SIGKILL, in the middle of the stream
        at_kill = positions_of(services.dsn, source)
        assert at_kill < total
        publisher.send(lines[total // 2 :])  # queued by the broker for the dead worker
        restarted = Worker(services, group=f"g{unique}", client_id=worker.client_id).start()
        try:
            wait_until(
                lambda: positions_of(services.dsn, source) >= total,
                timeout=120,
                what=f"{total} rows after the restart",
            )
            time.sleep(1.0)  # late redeliveries would show up as extra rows now
            assert positions_of(services.dsn, source) == total
            assert (
                count_rows(
                    services.dsn,
                    "SELECT count(DISTINCT fix_time) FROM positions WHERE source_id = %s",
                    (source,),
                )
                == total
            )
            assert restarted.alive()
        finally:
            restarted.close()
    finally:
        publisher.close()
        worker.close()


@pytest.mark.slow
def test_postgres_down_for_5_seconds_loses_nothing_and_the_worker_survives() -> None:
    with running_services() as services:
        source = f"pg{uuid.uuid4().hex[:8]}"
        total = 12_000
        lines = fix_lines(total, start=time.time() - 7200, step=0.01)
        with running_worker(services, group="pgdown") as worker:
            publisher = LinePublisher(services, f"fleet/vehicles/{source}/location")
            try:
                sent = 0
                chunk = 400

                def send_chunk() -> None:
                    nonlocal sent
                    publisher.send(lines[sent : sent + chunk])
                    sent += chunk

                while positions_of(services.dsn, source) < 2000:
                    send_chunk()
                    time.sleep(0.1)
                services.postgres.stop()
                outage_ends = time.monotonic() + 5
                while time.monotonic() < outage_ends:
                    if sent < total:
                        send_chunk()
                    assert worker.alive()
                    time.sleep(0.1)
                services.postgres.start()
                while sent < total:
                    send_chunk()
                    time.sleep(0.05)
                wait_until(
                    lambda: positions_of(services.dsn, source) == total,
                    timeout=90,
                    what=f"all {total} rows after PostgreSQL came back",
                )
                assert worker.alive()
                assert (
                    worker.metric("fleetpulse_ingest_database_errors_total", 'kind="unavailable"')
                    >= 1
                )
                assert "database unavailable" in worker.log()
            finally:
                publisher.close()


class AckTrackingPublisher:
    """A paho QoS 1 publisher that knows which messages the broker acknowledged.

    Outstanding publishes are capped (paho overwrites in-flight messages past 65,535)."""

    def __init__(self, services: Services, topic: str) -> None:
        self.topic = topic
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"acked-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.window = threading.BoundedSemaphore(200)
        self.client.on_publish = self._on_publish
        self.sent: list[tuple[int, mqtt.MQTTMessageInfo]] = []
        #: The reason code of the last PUBACK per packet id (0 success, 0x10 no subscribers).
        self.reasons: dict[int, int] = {}
        loadgen = services.credentials("loadgen")
        self.client.username_pw_set(loadgen.username, loadgen.password)
        self.client.connect(services.mosquitto.host, services.mosquitto.port)
        self.client.loop_start()

    def _on_publish(
        self, _client: object, _userdata: object, mid: int, reason: ReasonCode, _props: object
    ) -> None:
        self.reasons[mid] = reason.value
        with contextlib.suppress(ValueError):
            self.window.release()

    def publish(self, index: int, payload: str) -> None:
        self.window.acquire(timeout=2)
        self.sent.append((index, self.client.publish(self.topic, payload, qos=1)))

    def acknowledged(self) -> set[int]:
        """What the broker acknowledged as delivered: a PUBACK with reason code 0.

        A publish made while paho knew the broker was down has an error code
        (is_published() raises for it): not counted, whatever follows. Nor is a PUBACK
        with 0x10, "no matching subscribers": Mosquitto 2.0 does not restore shared
        subscriptions from its persistence file, so until ingest has reconnected and
        subscribed again a restarted broker drops what it is sent and says so
        (docs/operations.md); a device keeps such a fix and sends it again."""
        return {
            index
            for index, info in self.sent
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS
            and info.is_published()
            and self.reasons.get(info.mid) == 0
        }

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.mark.slow
def test_broker_restart_loses_nothing_the_broker_acknowledged() -> None:
    with running_services() as services:
        source = f"br{uuid.uuid4().hex[:8]}"
        start = time.time() - 7200
        total = 6000
        with running_worker(services, group="brokerrestart") as worker:
            publisher = AckTrackingPublisher(services, f"fleet/vehicles/{source}/location")
            try:
                for index in range(total):
                    publisher.publish(index, f'{{"lat":1,"lon":2,"ts":{start + index:.0f}}}')
                    if index == total // 3:
                        services.mosquitto.stop()  # clean stop: persistence saved
                        services.mosquitto.start()
                    if index % 100 == 0:
                        time.sleep(0.05)
                wait_until(
                    lambda: len(publisher.acknowledged()) > total // 2,
                    timeout=30,
                    what="acks after the restart",
                )
                acknowledged = publisher.acknowledged()
                assert max(acknowledged) > total // 2  # the stream went on after the restart

                def stored() -> set[int]:
                    with psycopg.connect(services.dsn) as conn:
                        rows = conn.execute(
                            "SELECT fix_time FROM positions WHERE source_id = %s", (source,)
                        ).fetchall()
                    return {round(row[0].timestamp() - start) for row in rows}

                try:
                    wait_until(
                        lambda: acknowledged <= stored(),
                        timeout=60,
                        what="every acknowledged fix in the database",
                    )
                except AssertionError:
                    missing = sorted(acknowledged - stored())
                    raise AssertionError(
                        f"{len(missing)} acknowledged fixes missing, indexes {missing[:5]}"
                        f"..{missing[-5:]}; worker received"
                        f" {worker.metric('fleetpulse_ingest_messages_received_total')};"
                        f" worker log tail:\n{worker.log()[-3000:]}"
                    ) from None
                assert worker.alive()
                assert worker.log().count("subscribed to") >= 2  # it reconnected
            finally:
                publisher.close()


def test_two_workers_share_the_stream_and_store_each_message_once(
    services: Services, unique: str
) -> None:
    group = f"g{unique}"
    sources = [f"s{unique}a", f"s{unique}b"]
    per_source = 3000
    with (
        running_worker(services, group=group) as first,
        running_worker(services, group=group) as second,
    ):
        publishers = [
            LinePublisher(services, f"fleet/vehicles/{source}/location") for source in sources
        ]
        try:
            start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
            for publisher in publishers:
                publisher.send(fix_lines(per_source, start=start, step=0.01))
            wait_until(
                lambda: sum(positions_of(services.dsn, s) for s in sources) == 2 * per_source,
                timeout=60,
                what="all rows",
            )
            time.sleep(0.5)
            assert sum(positions_of(services.dsn, s) for s in sources) == 2 * per_source
            stored = [
                w.metric("fleetpulse_ingest_rows_stored_total", 'table="positions"')
                for w in (first, second)
            ]
            received = [
                w.metric("fleetpulse_ingest_messages_received_total") for w in (first, second)
            ]
            assert all(count > 0 for count in stored), stored  # both took part
            assert sum(stored) == 2 * per_source  # each message stored once ...
            assert sum(received) == 2 * per_source  # ... and delivered to one worker only
            for w in (first, second):
                assert w.metric("fleetpulse_ingest_duplicates_total", 'table="positions"') == 0
        finally:
            for publisher in publishers:
                publisher.close()


def test_a_worker_stopped_mid_stream_leaves_its_share_to_the_other(
    services: Services, unique: str
) -> None:
    """SIGTERM one of two workers of a group while fixes stream in: it leaves the shared
    group, stores what the broker had already routed to it, and the other worker stores
    everything after; nothing waits for the stopped worker to come back."""
    group = f"leave{unique}"
    source = f"s{unique}leave"
    total = 4000
    lines = fix_lines(total, start=datetime(2026, 1, 2, tzinfo=UTC).timestamp(), step=0.01)
    with (
        running_worker(services, group=group) as stopping,
        running_worker(services, group=group) as staying,
    ):
        publisher = LinePublisher(services, f"fleet/vehicles/{source}/location")
        try:
            publisher.send(lines[: total // 2])
            wait_until(
                lambda: stopping.metric("fleetpulse_ingest_messages_received_total") > 0,
                timeout=60,
                what="the first worker to take part",
            )
            assert stopping.terminate() == 0
            assert "left the shared group" in stopping.log()
            publisher.send(lines[total // 2 :])
            wait_until(
                lambda: positions_of(services.dsn, source) == total,
                timeout=60,
                what="every fix, with one worker stopped for good",
            )
            assert staying.alive()
        finally:
            publisher.close()


def test_the_last_worker_stopped_cleanly_loses_nothing_published_while_it_is_away(
    services: Services, unique: str
) -> None:
    """Leaving the group on SIGTERM must not drop what arrives while no worker runs: the
    stopped worker's session keeps a standby subscription, replayed when it returns."""
    group, client_id = f"last{unique}", f"last-worker-{unique}"
    source = f"s{unique}last"
    lines = fix_lines(1000, start=datetime(2026, 1, 3, tzinfo=UTC).timestamp(), step=0.01)
    with running_worker(services, group=group, client_id=client_id) as worker:
        assert worker.terminate() == 0
    publisher = LinePublisher(services, f"fleet/vehicles/{source}/location")
    try:
        publisher.send(lines)
        time.sleep(1.0)  # let the broker queue them for the stopped worker's session
        assert positions_of(services.dsn, source) == 0
        with running_worker(services, group=group, client_id=client_id):
            wait_until(
                lambda: positions_of(services.dsn, source) == len(lines),
                timeout=60,
                what="what was published while the worker was away",
            )
    finally:
        publisher.close()


def test_a_worker_stops_promptly_under_a_stream_that_never_pauses(
    services: Services, unique: str
) -> None:
    """The stream does not pause while one of two workers stops: the stopping worker must
    still find the end of its share (a round trip, not a quiet period) long before its
    drain deadline, must not take in the standby copy of the stream meanwhile, and the
    other worker stores everything."""
    group = f"busy{unique}"
    source = f"s{unique}busy"
    drain_deadline_s = 120
    stop_publishing = threading.Event()
    sent = [0]
    publisher = LinePublisher(services, f"fleet/vehicles/{source}/location")
    start = datetime(2026, 1, 4, tzinfo=UTC).timestamp()

    def publish_until_told() -> None:
        while not stop_publishing.is_set():
            publisher.send(fix_lines(50, start=start + sent[0] * 0.01, step=0.01))
            sent[0] += 50
            time.sleep(0.01)

    extra_env = {"FLEETPULSE_INGEST_DRAIN_TIMEOUT_S": str(drain_deadline_s)}
    stream = threading.Thread(target=publish_until_told, name="stream")
    try:
        with (
            running_worker(services, group=group, extra_env=extra_env) as stopping,
            running_worker(services, group=group, extra_env=extra_env) as staying,
        ):
            stream.start()
            wait_until(
                lambda: stopping.metric("fleetpulse_ingest_messages_received_total") > 0,
                timeout=60,
                what="the first worker to take part",
            )
            # Stopping ends while the stream still flows; its deadline is far off.
            assert stopping.terminate(timeout=drain_deadline_s - 30) == 0
            assert stream.is_alive()
            log = stopping.log()
            assert "left the shared group" in log
            assert "drain deadline passed" not in log
            stopped_at = positions_of(services.dsn, source)
            wait_until(
                lambda: positions_of(services.dsn, source) > stopped_at,
                timeout=60,
                what="the staying worker to go on storing the stream",
            )
            stop_publishing.set()
            stream.join(timeout=60)
            wait_until(
                lambda: positions_of(services.dsn, source) == sent[0],
                timeout=60,
                what="every fix of the stream, with one worker stopped for good",
            )
            assert staying.alive()
            assert staying.metric("fleetpulse_ingest_duplicates_total", 'table="positions"') == 0
    finally:
        stop_publishing.set()
        if stream.is_alive():
            stream.join(timeout=60)
        publisher.close()
