"""`make run`: the whole stack plus the simulated fleet, started and stopped as a user would."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import psycopg

from config.settings import PROJECT_ROOT
from stack.process import free_port


def processes_using(folder: Path) -> list[str]:
    """Command lines of processes whose arguments or working directory name `folder`."""
    needle = str(folder)
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if needle in cmdline or cwd.startswith(needle):
            found.append(f"{proc.name}: {cmdline}")
    return found


def test_demo_fleet_delivers_orders_and_stops_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    env = {
        **os.environ,
        "FLEETPULSE_DATA_DIR": str(data_dir),
        "FLEETPULSE_MQTT_PORT": str(free_port()),
        "FLEETPULSE_MQTT_TLS_PORT": str(free_port()),
        "FLEETPULSE_MQTT_TLS_HOST": "127.0.0.1",
        "FLEETPULSE_POSTGRES_PORT": str(free_port()),
        "FLEETPULSE_INGEST_METRICS_PORT": str(free_port()),
        "FLEETPULSE_INGEST_CLIENT_ID": "demo-test",
        "FLEETPULSE_BRIDGE_PORT": str(free_port()),
        "FLEETPULSE_API_PORT": str(free_port()),
    }
    env.pop("FLEETPULSE_DATABASE_URL", None)
    dsn = f"postgresql://postgres@127.0.0.1:{env['FLEETPULSE_POSTGRES_PORT']}/fleetpulse"
    # Exactly what a user types; its own session, so a Ctrl-C can reach the whole group.
    supervisor = subprocess.Popen(
        ["make", "run", "COURIERS=4", "VEHICLES=1", "RATE=30", "TIME_SCALE=15", "SEED=5"],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    output: list[str] = []
    reader = threading.Thread(
        target=lambda: output.extend(iter(supervisor.stdout.readline, "")),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()

    def query(sql: str) -> int:
        try:
            with psycopg.connect(dsn, connect_timeout=2) as conn:
                row = conn.execute(sql).fetchone()
        except psycopg.Error:
            return 0
        return int(row[0]) if row and row[0] is not None else 0

    try:
        deadline = time.monotonic() + 240
        delivered = fixes = owntracks_fixes = 0
        while time.monotonic() < deadline and not (delivered and owntracks_fixes):
            assert supervisor.poll() is None, "".join(output)
            time.sleep(2)
            fixes = query("SELECT count(*) FROM positions")
            # c-1 is the demo's OwnTracks phone (a fifth of the couriers, the first ones).
            owntracks_fixes = query("SELECT count(*) FROM positions WHERE source_id = 'c-1'")
            delivered = query("SELECT count(*) FROM orders WHERE status = 'delivered'")
        text = "".join(output)
        assert delivered >= 1, f"no order was delivered; {fixes} fixes stored\n{text}"
        assert owntracks_fixes > 0
        assert query("SELECT count(*) FROM positions WHERE source_kind = 'vehicle'") > 0
        # Each delivered order walked the whole workflow, as the couriers' phones reported it.
        walked = query(
            "SELECT count(*) FROM (SELECT order_id FROM order_events WHERE kind = 'status'"
            " AND payload->>'source' = 'mqtt' GROUP BY order_id"
            " HAVING count(DISTINCT payload->>'to') = 3) AS complete"
        )
        assert walked >= 1
        # Ready-made tokens, one per role; the customer's sees their own live order.
        tokens = {
            line.split("token ", 1)[1].split(":", 1)[0]: line.rsplit(" ", 1)[1].strip()
            for line in text.splitlines()
            if line.startswith("[stack] token ")
        }
        assert set(tokens) == {"admin", "restaurant", "customer", "courier"}
        api = f"http://127.0.0.1:{env['FLEETPULSE_API_PORT']}"
        mine = httpx.get(
            f"{api}/orders", headers={"Authorization": f"Bearer {tokens['customer']}"}
        ).json()["items"]
        assert mine
        assert {order["customer_uid"] for order in mine} == {"alice"}
        status_lines = [line for line in text.splitlines() if line.startswith("[status] ")]
        assert status_lines, text
        # Fixes stored per second, sockets open, and the orders counted by state.
        assert re.search(
            r"fixes/s stored=\S+ .*sockets open=\d+ .*orders: (\w+=\d+ ?)+$", status_lines[-1]
        ), status_lines[-1]
    finally:
        os.killpg(supervisor.pid, signal.SIGINT)  # Ctrl-C in the terminal
        supervisor.wait(timeout=120)  # make itself reports the interrupt
        reader.join(timeout=10)
    text = "".join(output)
    assert "[sim] stopped:" in text
    assert "[stack] stopped" in text, text
    assert processes_using(tmp_path) == []
