"""The secured broker's bootstrap: idempotent, devices kept across restarts, secrets repaired,
TLS files generated once, listeners bound where they should be, and the devices CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from broker.accounts import (
    CredentialsError,
    MqttCredentials,
    ServiceAccount,
    process_credentials,
    process_environment,
    secrets_path,
)
from broker.dynsec import DynsecControl
from broker.provisioning import DeviceProvisioner
from config import load_settings
from config.settings import PROJECT_ROOT
from stack import MosquittoServer
from stack.process import free_port
from tests.mqtt5 import NOT_AUTHORIZED, Mqtt5Client
from tests.services import Services
from tests.test_stack import wait_for_line


def connects(server: MosquittoServer, username: str, password: str, client_id: str) -> int:
    with Mqtt5Client(
        host=server.host,
        port=server.port,
        username=username,
        password=password,
        client_id=client_id,
    ) as client:
        return client.open()


def test_bootstrap_is_idempotent_and_devices_survive_restarts(
    services: Services, tmp_path: Path, unique: str
) -> None:
    server = MosquittoServer(tmp_path, free_port(), tls_port=free_port())
    server.start()
    try:
        assert server.last_bootstrap is not None
        created = server.last_bootstrap.created
        for account in ("ingest", "bridge", "api", "loadgen"):
            assert f"role service.{account}" in created
            assert f"client {account}" in created
        secrets_before = secrets_path(tmp_path).read_text()
        ca_before = server.cafile.read_bytes()
        control = DynsecControl(server.endpoint, server.credentials("admin"))
        provisioner = DeviceProvisioner(dsn=services.dsn, control=control, topic_prefix="fleet")
        device = provisioner.create(kind="courier", owner_id=f"c-{unique}")

        for _ in range(2):
            server.stop()
            server.start()
            assert server.last_bootstrap is not None
            assert server.last_bootstrap.summary() == "up to date"
            assert secrets_path(tmp_path).read_text() == secrets_before
            assert server.cafile.read_bytes() == ca_before
            assert connects(server, device.username, device.password, device.client_id) == 0, (
                "a provisioned device must survive a restart"
            )
            accounts: tuple[ServiceAccount, ...] = ("ingest", "bridge", "api", "admin")
            for account in accounts:
                credentials = server.credentials(account)
                assert connects(server, credentials.username, credentials.password, unique) == 0

        # A long-lived provisioner (the api's) reconnects by itself after broker restarts.
        vehicle = provisioner.create(kind="vehicle", owner_id=f"v-{unique}")
        provisioner.close()
        assert connects(server, vehicle.username, vehicle.password, vehicle.client_id) == 0

        # A lost secrets file: new passwords everywhere, the admin's repaired in the plugin's
        # file while the broker is down, the services' through the control topic.
        server.stop()
        secrets_path(tmp_path).unlink()
        server.start()
        assert server.last_bootstrap is not None
        assert "client ingest" in server.last_bootstrap.updated
        assert secrets_path(tmp_path).read_text() != secrets_before
        ingest = server.credentials("ingest")
        assert connects(server, ingest.username, ingest.password, unique) == 0
        assert connects(server, device.username, device.password, device.client_id) == 0

        # A changed topic prefix re-scopes the roles on the next start.
        server.stop()
        server.topic_prefix = f"p{unique}"
        server.start()
        assert server.last_bootstrap is not None
        assert "role service.ingest" in server.last_bootstrap.updated
        with Mqtt5Client(
            host=server.host,
            port=server.port,
            username=ingest.username,
            password=ingest.password,
        ) as client:
            assert client.open() == 0
            assert client.subscribe(f"$share/ingest/p{unique}/#") == 1
            assert client.subscribe("$share/ingest/fleet/#") == NOT_AUTHORIZED
    finally:
        server.stop()


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on `port`, from /proc (no tools needed)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A = LISTEN
                found.add(address if width == 32 else _ipv4(address))
    return found


def _ipv4(little_endian_hex: str) -> str:
    return ".".join(str(b) for b in reversed(bytes.fromhex(little_endian_hex)))


def test_listeners_plain_and_websockets_on_loopback_only(tmp_path: Path) -> None:
    server = MosquittoServer(
        tmp_path, free_port(), tls_port=free_port(), tls_host="", websockets_port=free_port()
    )
    server.start()
    try:
        assert listening_addresses(server.port) == {"127.0.0.1"}
        assert listening_addresses(server.websockets_port) == {"127.0.0.1"}
        assert server.tls_port is not None
        tls = listening_addresses(server.tls_port)
        assert "0.0.0.0" in tls, "an empty FLEETPULSE_MQTT_TLS_HOST listens on every interface"
        config = server.config_path.read_text()
        assert config.count("allow_anonymous false") == 1
        assert "allow_anonymous true" not in config
        assert "per_listener_settings false" in config  # so it applies to every listener
    finally:
        server.stop()


def test_devices_cli_add_list_rotate_revoke(services: Services, unique: str) -> None:
    env = {**os.environ, **services.environment()}
    command = [sys.executable, "-m", "broker.devices"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    added = run("add", "courier", f"c-{unique}")
    assert added.returncode == 0, added.stderr
    fields = dict(
        line.split(":", 1)
        for line in added.stdout.splitlines()
        if line.startswith(("user", "pass"))
    )
    username, password = fields["username"].strip(), fields["password"].strip()
    assert username == f"courier.c-{unique}"
    assert f"fleet/couriers/c-{unique}/assignments" in added.stdout

    again = run("add", "courier", f"c-{unique}")
    assert again.returncode == 1
    assert "already has credentials; rotate" in again.stderr

    listed = run("list")
    assert f"courier.c-{unique}" in listed.stdout

    # The printed credentials work with the C client.
    published = subprocess.run(
        [
            "mosquitto_pub",
            "-h",
            services.mosquitto.host,
            "-p",
            str(services.mosquitto.port),
            "-u",
            username,
            "-P",
            password,
            "-i",
            username,
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            f"fleet/couriers/c-{unique}/location",
            "-m",
            "{}",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert published.returncode == 0, published.stderr

    rotated = run("rotate", "courier", f"c-{unique}", "--json")
    assert rotated.returncode == 0, rotated.stderr
    assert password not in rotated.stdout
    revoked = run("revoke", "courier", f"c-{unique}")
    assert revoked.returncode == 0, revoked.stderr
    assert f"revoked courier.c-{unique}" in revoked.stdout
    assert f"courier.c-{unique}" not in run("list").stdout
    assert f"courier.c-{unique}" in run("list", "--all").stdout

    with Mqtt5Client(
        host=services.mosquitto.host,
        port=services.mosquitto.port,
        username=username,
        password=password,
        client_id=username,
    ) as client:
        assert client.open() == NOT_AUTHORIZED
    bad = run("add", "drone", "d-1")
    assert bad.returncode == 2


def test_stack_cli_comes_up_twice_and_keeps_devices(tmp_path: Path, unique: str) -> None:
    """`make run` twice: the first start creates the accounts, the second finds them in place
    and the device provisioned in between still connects, over TLS with the generated CA."""
    data_dir = tmp_path / "var"
    env = {
        **os.environ,
        "FLEETPULSE_DATA_DIR": str(data_dir),
        "FLEETPULSE_MQTT_PORT": str(free_port()),
        "FLEETPULSE_MQTT_TLS_PORT": str(free_port()),
        "FLEETPULSE_MQTT_TLS_HOST": "127.0.0.1",
        "FLEETPULSE_POSTGRES_PORT": str(free_port()),
        "FLEETPULSE_INGEST_METRICS_PORT": str(free_port()),
        "FLEETPULSE_INGEST_CLIENT_ID": f"ingest-{unique}",
    }
    env.pop("FLEETPULSE_DATABASE_URL", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", *args],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    outputs = []
    device: dict[str, str] = {}
    for round_ in range(2):
        stack = subprocess.Popen(
            [sys.executable, "-m", "stack", "up"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            outputs.append("".join(wait_for_line(stack, "running;", timeout=90)))
            if round_ == 0:
                added = cli("broker.devices", "add", "courier", f"c-{unique}", "--json")
                assert added.returncode == 0, added.stderr
                device = json.loads(added.stdout)
            published = subprocess.run(
                [
                    "mosquitto_pub",
                    "-h",
                    "localhost",
                    "-p",
                    env["FLEETPULSE_MQTT_TLS_PORT"],
                    "--cafile",
                    str(data_dir / "tls" / "ca.crt"),
                    "-V",
                    "mqttv5",
                    "-q",
                    "1",
                    "-u",
                    device["username"],
                    "-P",
                    device["password"],
                    "-i",
                    device["client_id"],
                    "-t",
                    f"fleet/couriers/c-{unique}/location",
                    "-m",
                    "{}",
                ],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            assert published.returncode == 0, published.stderr
        finally:
            down = cli("stack", "down")
            assert down.returncode == 0, down.stdout + down.stderr
            stack.wait(timeout=60)
    assert "broker security: created role service.ingest" in outputs[0]
    assert "broker security: up to date" in outputs[1]
    assert f"mqtts://127.0.0.1:{env['FLEETPULSE_MQTT_TLS_PORT']}" in outputs[1]


def test_processes_get_their_accounts(services: Services, tmp_path: Path) -> None:
    env = process_environment(services.root, "api")
    api = services.credentials("api")
    assert env["FLEETPULSE_MQTT_USERNAME"] == "api"
    assert env["FLEETPULSE_MQTT_PASSWORD"] == api.password
    assert env["FLEETPULSE_MQTT_ADMIN_PASSWORD"] == services.credentials("admin").password
    assert "FLEETPULSE_MQTT_ADMIN_PASSWORD" not in process_environment(services.root, "ingest")
    # From the settings; with only the username, the password comes from the secrets file.
    explicit = load_settings(mqtt_username="bridge", mqtt_password="given")
    assert process_credentials(explicit) == MqttCredentials("bridge", "given")
    from_file = load_settings(data_dir=services.root, mqtt_username="ingest")
    assert process_credentials(from_file) == services.credentials("ingest")
    with pytest.raises(CredentialsError, match="anonymous"):
        process_credentials(load_settings(data_dir=services.root, mqtt_username=""))
    with pytest.raises(CredentialsError, match="make run"):
        process_credentials(load_settings(data_dir=tmp_path, mqtt_username="ingest"))
    # What the supervisor hands a process is what the broker accepts.
    with Mqtt5Client(
        host=services.mosquitto.host,
        port=services.mosquitto.port,
        username=env["FLEETPULSE_MQTT_USERNAME"],
        password=env["FLEETPULSE_MQTT_PASSWORD"],
    ) as client:
        assert client.open() == 0


def test_broker_cli_bootstrap_and_credentials(services: Services) -> None:
    """What an operator runs against a broker that is already up (production)."""
    env = {**os.environ, **services.environment()}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "broker", *args],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    bootstrap = run("bootstrap")
    assert bootstrap.returncode == 0, bootstrap.stderr
    assert bootstrap.stdout.strip() == "broker security: up to date"
    lines = run("credentials", "bridge").stdout.splitlines()
    assert lines == [
        "FLEETPULSE_MQTT_USERNAME=bridge",
        f"FLEETPULSE_MQTT_PASSWORD={services.credentials('bridge').password}",
    ]
    env["FLEETPULSE_MQTT_ADMIN_PASSWORD"] = "wrong"
    refused = run("bootstrap")
    assert refused.returncode == 1
    assert "refused the admin account" in refused.stderr
