"""Broker security against the real Mosquitto: authentication, device ACLs, revocation, TLS,
service accounts. MQTT 5 clients, so that a denial shows as reason code 135."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from broker.accounts import ServiceAccount
from broker.provisioning import DeviceCredentials, DeviceExistsError, DeviceNotFoundError
from broker.tls import ensure_local_ca
from tests.mqtt5 import (
    ACCEPTED,
    ADMINISTRATIVE_ACTION,
    NOT_AUTHORIZED,
    Mqtt5Client,
)
from tests.services import Services

GRANTED_QOS1 = 1
QUIET = 1.0  # how long "receives nothing" waits


def device_client(
    services: Services,
    device: DeviceCredentials,
    *,
    client_id: str | None = None,
    tls_cafile: Path | None = None,
) -> Mqtt5Client:
    """The device as it connects: its username as client id; over TLS when given a CA."""
    tls_port = services.mosquitto.tls_port
    assert tls_port is not None
    return Mqtt5Client(
        host="localhost" if tls_cafile else services.mosquitto.host,
        port=tls_port if tls_cafile else services.mosquitto.port,
        username=device.username,
        password=device.password,
        client_id=client_id or device.client_id,
        cafile=tls_cafile,
    )


def service_client(services: Services, account: ServiceAccount) -> Mqtt5Client:
    credentials = services.credentials(account)
    return Mqtt5Client(
        host=services.mosquitto.host,
        port=services.mosquitto.port,
        username=credentials.username,
        password=credentials.password,
    )


def fix(unique: str) -> str:
    return json.dumps({"lat": 52.52, "lon": 13.405, "ts": time.time(), "note": unique})


def test_anonymous_and_wrong_password_are_refused(services: Services) -> None:
    host, port = services.mosquitto.host, services.mosquitto.port
    anonymous = Mqtt5Client(host=host, port=port, username=None, password=None)
    assert anonymous.open() == NOT_AUTHORIZED
    anonymous.close()
    for username in ("ingest", "admin", "nobody"):
        wrong = Mqtt5Client(host=host, port=port, username=username, password="wrong")
        assert wrong.open() == NOT_AUTHORIZED
        wrong.close()
    # The C client, MQTT 3.1.1: refused, with the reason on stderr.
    result = subprocess.run(
        [
            "mosquitto_pub",
            "-h",
            host,
            "-p",
            str(port),
            "-t",
            "fleet/couriers/x/location",
            "-m",
            "{}",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode != 0
    assert "not authorised" in result.stderr


def test_device_publishes_its_own_topics_and_ingest_receives_them(
    services: Services, unique: str
) -> None:
    courier = services.provision_device("courier", f"c-{unique}")
    vehicle = services.provision_device("vehicle", f"v-{unique}")
    with service_client(services, "ingest") as ingest:
        assert ingest.open() == 0
        assert ingest.subscribe("$share/ingest/fleet/#") == GRANTED_QOS1
        assert ingest.subscribe("$share/ingest/owntracks/#") == GRANTED_QOS1
        own_topics = [
            (courier, f"fleet/couriers/c-{unique}/location"),
            (courier, f"fleet/couriers/c-{unique}/presence"),
            (courier, f"fleet/couriers/c-{unique}/deliveries/o-1/status"),
            (courier, f"owntracks/c-{unique}/phone"),
            (vehicle, f"fleet/vehicles/v-{unique}/location"),
        ]
        for device, topic in own_topics:
            with device_client(services, device) as client:
                assert client.open() == 0
                assert client.publish(topic, fix(unique)) == 0, topic
        got = sorted(topic for topic, _ in ingest.received(QUIET))
    assert got == sorted(topic for _, topic in own_topics)


def test_device_cannot_publish_as_another_device(services: Services, unique: str) -> None:
    courier = services.provision_device("courier", f"c-{unique}")
    services.provision_device("courier", f"other-{unique}")
    forbidden = [
        f"fleet/couriers/other-{unique}/location",
        f"fleet/couriers/other-{unique}/emergency",
        f"fleet/vehicles/c-{unique}/location",
        f"owntracks/other-{unique}/phone",
        # Server topics: a phone may not forge its own assignments or an order's status.
        f"fleet/couriers/c-{unique}/assignments",
        f"fleet/orders/o-{unique}/status",
        f"fleet/alerts/c-{unique}",
        "$CONTROL/dynamic-security/v1",
    ]
    with service_client(services, "ingest") as ingest:
        assert ingest.open() == 0
        assert ingest.subscribe("$share/ingest/fleet/#") == GRANTED_QOS1
        assert ingest.subscribe("$share/ingest/owntracks/#") == GRANTED_QOS1
        with device_client(services, courier) as client:
            assert client.open() == 0
            for topic in forbidden:
                assert client.publish(topic, fix(unique)) == NOT_AUTHORIZED, topic
            # The connection stays usable, and its own topic still works.
            own = f"fleet/couriers/c-{unique}/location"
            assert client.publish(own, fix(unique)) == 0
        assert [topic for topic, _ in ingest.received(QUIET)] == [own]


def test_device_cannot_read_another_devices_assignments(services: Services, unique: str) -> None:
    mine = services.provision_device("courier", f"c-{unique}")
    services.provision_device("courier", f"other-{unique}")
    own_topic = f"fleet/couriers/c-{unique}/assignments"
    other_topic = f"fleet/couriers/other-{unique}/assignments"
    with device_client(services, mine) as device, service_client(services, "api") as api:
        assert device.open() == 0
        assert api.open() == 0
        assert device.subscribe(own_topic) == GRANTED_QOS1
        for topic in (
            other_topic,
            "fleet/couriers/+/assignments",
            "fleet/#",
            "#",
            f"fleet/couriers/other-{unique}/location",
            f"$share/g/{other_topic}",
            "$CONTROL/dynamic-security/v1/response",
        ):
            assert device.subscribe(topic) == NOT_AUTHORIZED, topic
        assert api.publish(other_topic, b'{"type": "assignment", "order": "secret"}') in ACCEPTED
        assert api.publish(own_topic, b'{"type": "assignment", "order": "mine"}') == 0
        got = device.received(QUIET)
    assert got == [(own_topic, b'{"type": "assignment", "order": "mine"}')]


def test_device_must_use_its_username_as_client_id(services: Services, unique: str) -> None:
    """Otherwise a phone could connect as `ingest-1` and take over ingest's queued session."""
    device = services.provision_device("courier", f"c-{unique}")
    with device_client(services, device, client_id=f"ingest-{unique}") as impostor:
        assert impostor.open() == NOT_AUTHORIZED


def test_revoked_device_is_disconnected_and_cannot_reconnect(
    services: Services, unique: str
) -> None:
    device = services.provision_device("courier", f"c-{unique}")
    with device_client(services, device) as client:
        assert client.open() == 0
        assert client.subscribe(f"fleet/couriers/c-{unique}/assignments") == GRANTED_QOS1
        started = time.monotonic()
        with services.provisioner() as provisioner:
            revoked = provisioner.revoke(kind="courier", owner_id=f"c-{unique}")
        assert client.disconnects.get(timeout=5) == ADMINISTRATIVE_ACTION
        assert time.monotonic() - started < 5
    assert revoked.revoked_at is not None
    with device_client(services, device) as again:
        assert again.open() == NOT_AUTHORIZED
    with psycopg.connect(services.dsn) as conn:
        row = conn.execute(
            "SELECT revoked_at IS NOT NULL FROM devices WHERE username = %s", (device.username,)
        ).fetchone()
    assert row == (True,)


def test_rotation_kicks_the_old_password_and_the_new_one_works(
    services: Services, unique: str
) -> None:
    first = services.provision_device("courier", f"c-{unique}")
    with device_client(services, first) as client:
        assert client.open() == 0
        with services.provisioner() as provisioner:
            second = provisioner.rotate(kind="courier", owner_id=f"c-{unique}")
        assert client.disconnects.get(timeout=5) == ADMINISTRATIVE_ACTION
    assert second.password != first.password
    with device_client(services, first) as old:
        assert old.open() == NOT_AUTHORIZED
    with device_client(services, second) as new:
        assert new.open() == 0
        assert new.publish(f"fleet/couriers/c-{unique}/location", fix(unique)) in ACCEPTED


def test_provisioning_rules(services: Services, unique: str) -> None:
    with services.provisioner() as provisioner:
        created = provisioner.create(kind="vehicle", owner_id=f"v-{unique}")
        assert created.username == f"vehicle.v-{unique}"
        assert created.publish_topics == (f"fleet/vehicles/v-{unique}/#",)
        assert created.subscribe_topics == ()
        with pytest.raises(DeviceExistsError, match="rotate"):
            provisioner.create(kind="vehicle", owner_id=f"v-{unique}")
        with pytest.raises(DeviceNotFoundError):
            provisioner.rotate(kind="vehicle", owner_id=f"nobody-{unique}")
        with pytest.raises(ValueError, match="1-64 characters"):
            provisioner.create(kind="courier", owner_id="bad/id")
        with pytest.raises(ValueError, match="not one of"):
            provisioner.create(kind="drone", owner_id="d-1")
        provisioner.revoke(kind="vehicle", owner_id=f"v-{unique}")
        assert provisioner.revoke(kind="vehicle", owner_id=f"v-{unique}").revoked_at is not None
        with pytest.raises(DeviceNotFoundError):
            provisioner.rotate(kind="vehicle", owner_id=f"v-{unique}")
        # Revoked, then added again: a fresh device with new credentials.
        again = provisioner.create(kind="vehicle", owner_id=f"v-{unique}")
        listed = [d for d in provisioner.list() if d.owner_id == f"v-{unique}"]
    assert again.password != created.password
    assert len(listed) == 1
    assert listed[0].active
    # The password is kept nowhere in clear: not in the database, not in the broker's file.
    with psycopg.connect(services.dsn) as conn:
        row = conn.execute(
            "SELECT row_to_json(d)::text FROM devices d WHERE username = %s", (again.username,)
        ).fetchone()
    assert row is not None
    assert again.password not in row[0]
    assert again.password not in services.mosquitto.dynsec_path.read_text()


def test_tls_with_the_generated_ca_and_refused_without(
    services: Services, unique: str, tmp_path: Path
) -> None:
    device = services.provision_device("courier", f"c-{unique}")
    tls_port = str(services.mosquitto.tls_port)
    base = ["mosquitto_pub", "-h", "localhost", "-p", tls_port, "-V", "mqttv5", "-q", "1"]
    base += ["-u", device.username, "-P", device.password, "-i", device.client_id]
    base += ["-t", f"fleet/couriers/c-{unique}/location", "-m", fix(unique)]
    with service_client(services, "bridge") as bridge:
        assert bridge.open() == 0
        assert bridge.subscribe(f"fleet/couriers/c-{unique}/location") == GRANTED_QOS1
        trusted = subprocess.run(
            [*base, "--cafile", str(services.cafile)],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert trusted.returncode == 0, trusted.stderr
        topic, _ = bridge.next_message()
        assert topic == f"fleet/couriers/c-{unique}/location"
    # Without our CA (trusting another one) the server certificate is refused.
    foreign_ca = ensure_local_ca(tmp_path / "foreign").cafile
    untrusted = subprocess.run(
        [*base, "--cafile", str(foreign_ca)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert untrusted.returncode != 0
    assert "TLS error" in untrusted.stderr
    with (
        device_client(services, device, tls_cafile=foreign_ca) as paho_untrusted,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        paho_untrusted.open()
    # And plain MQTT on the TLS port is no way around it.
    plain = subprocess.run(base, capture_output=True, text=True, timeout=20, check=False)
    assert plain.returncode != 0
    # Anonymous over TLS: the connection is trusted, the client is not.
    anonymous = subprocess.run(
        [
            "mosquitto_pub",
            "-h",
            "localhost",
            "-p",
            tls_port,
            "--cafile",
            str(services.cafile),
            "-t",
            f"fleet/couriers/c-{unique}/location",
            "-m",
            fix(unique),
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert anonymous.returncode != 0
    assert "not authorised" in anonymous.stderr
    # A paho client with the CA, as a Python device would connect.
    with device_client(services, device, tls_cafile=services.cafile) as client:
        assert client.open() == 0


def test_service_accounts_have_least_privilege(services: Services, unique: str) -> None:
    device_topic = f"fleet/couriers/c-{unique}/location"
    with (
        service_client(services, "ingest") as ingest,
        service_client(services, "bridge") as bridge,
        service_client(services, "api") as api,
        service_client(services, "loadgen") as loadgen,
    ):
        for client in (ingest, bridge, api, loadgen):
            assert client.open() == 0
        # Nobody but the admin speaks to the dynamic-security plugin.
        create = json.dumps({"commands": [{"command": "createClient", "username": "x"}]})
        for client in (ingest, bridge, api, loadgen):
            assert client.publish("$CONTROL/dynamic-security/v1", create) == NOT_AUTHORIZED
            assert client.subscribe("$CONTROL/dynamic-security/#") == NOT_AUTHORIZED
        # ingest and the bridge only read.
        for client in (ingest, bridge):
            assert client.publish(device_topic, fix(unique)) == NOT_AUTHORIZED
            assert client.publish(f"fleet/orders/o-{unique}/status", b"{}") == NOT_AUTHORIZED
        # ingest reads device topics through a shared group, and nothing else.
        assert ingest.subscribe("$share/ingest/fleet/#") == GRANTED_QOS1
        assert ingest.subscribe("$share/ingest/elsewhere/#") == NOT_AUTHORIZED
        assert ingest.subscribe("elsewhere/#") == NOT_AUTHORIZED
        # The bridge reads the whole fleet tree, server topics included.
        assert bridge.subscribe("fleet/#") == GRANTED_QOS1
        assert bridge.subscribe("$SYS/#") == NOT_AUTHORIZED
        # The api publishes assignments, order status and alerts, and never device data.
        assert api.publish(f"fleet/couriers/c-{unique}/assignments", b"{}") == 0
        assert api.publish(f"fleet/orders/o-{unique}/status", b"{}") == 0
        assert api.publish(f"fleet/alerts/{unique}", b"{}") == 0
        assert api.publish(device_topic, fix(unique)) == NOT_AUTHORIZED
        assert api.subscribe("$share/api/fleet/couriers/+/deliveries/+/status") == GRANTED_QOS1
        assert api.subscribe("fleet/vehicles/#") == NOT_AUTHORIZED
        # loadgen (local only) publishes as any device but never server topics.
        assert loadgen.publish(device_topic, fix(unique)) == 0
        assert loadgen.publish(f"fleet/couriers/c-{unique}/assignments", b"{}") == NOT_AUTHORIZED
        assert loadgen.subscribe("fleet/#") == NOT_AUTHORIZED

        got_bridge = sorted(topic for topic, _ in bridge.received(QUIET))
        got_ingest = sorted(topic for topic, _ in ingest.received(0.2))
    # The bridge relays the server topics too; ingest gets device topics only.
    assert got_bridge == sorted(
        [
            f"fleet/couriers/c-{unique}/assignments",
            f"fleet/orders/o-{unique}/status",
            f"fleet/alerts/{unique}",
            device_topic,
        ]
    )
    assert got_ingest == [device_topic]


def test_a_phones_will_goes_only_to_its_own_presence(services: Services, unique: str) -> None:
    """Phones set an MQTT will saying `offline` on their retained presence topic."""
    device = services.provision_device("courier", f"c-{unique}")
    auth = ["-u", device.username, "-P", device.password, "-i", device.client_id]

    def phone(will_topic: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                "mosquitto_sub",
                "-h",
                services.mosquitto.host,
                "-p",
                str(services.mosquitto.port),
                *auth,
                "-V",
                "mqttv5",
                "-t",
                f"fleet/couriers/c-{unique}/assignments",
                "--will-topic",
                will_topic,
                "--will-payload",
                '{"state":"offline"}',
                "--will-retain",
                "--will-qos",
                "1",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )

    with service_client(services, "bridge") as bridge:
        assert bridge.open() == 0
        assert bridge.subscribe("fleet/couriers/+/presence") == GRANTED_QOS1
        own = phone(f"fleet/couriers/c-{unique}/presence")
        time.sleep(1.0)
        assert own.poll() is None, "a will on its own presence topic is accepted"
        own.kill()  # no DISCONNECT: the broker publishes the will
        own.wait()
        topic, payload = bridge.next_message()
        assert (topic, payload) == (f"fleet/couriers/c-{unique}/presence", b'{"state":"offline"}')

        # Mosquitto 2.0.11 accepts the connection, but the forged will is never published.
        forged = phone(f"fleet/couriers/other-{unique}/presence")
        time.sleep(1.0)
        assert forged.poll() is None
        forged.kill()
        forged.wait()
        assert bridge.received(QUIET) == []
