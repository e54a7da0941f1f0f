"""Bridge benchmark: one `python -m bridge` process under a realistic mix, and, in the same
run, Mosquitto's own WebSocket listener fanning out to plain sockets as the reference.

The mix (defaults; flags scale it):
- 2,000 couriers each publishing a fix every 2 s (1,000 fixes/s, MQTT QoS 0);
- 5,000 customer sockets, each following one active order of one of those couriers (a courier
  carries up to 3 orders), opened while the stream runs;
- 20 admin sockets on the fleet firehose (all 1,000 fixes/s, batched).

Measured over a window after every socket is connected: publish-to-browser latency p50/p99
(the fix's `ts` is its publish time), delivered frames/s, positions lost (expected minus
received, where expected counts every fix a socket was entitled to; coalesced positions are
counted by the bridge and reported apart), the bridge's CPU and its RSS per socket.

Last line:
    bridge p99_ms=<n> p50_ms=<n> frames_per_s=<n> lost=<n> rss_kb_per_socket=<n> \
reference_frames_per_s=<n>
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing as mp
import os
import resource
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
import psycopg  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from auth import LocalSigner  # noqa: E402
from stack.process import free_port  # noqa: E402
from tests.services import running_services  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from light_websocket import LightWebSocket, open_websocket  # noqa: E402


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass
class Plan:
    couriers: int
    customers: int
    admins: int
    fix_interval_s: float
    window_s: float
    client_processes: int
    connect_concurrency: int
    reference_sockets: int
    reference_rate: float
    profile: str = ""
    settle_s: float = 10.0


# --- the shared clock between processes ---------------------------------------------------
@dataclass
class Window:
    """Set by the orchestrator once every socket is connected; 0 until then."""

    start: Any  # mp.Value('d')
    end: Any

    def bounds(self) -> tuple[float, float]:
        return float(self.start.value), float(self.end.value)


# --- the publisher (own process: paho over plain MQTT) ------------------------------------
def run_publisher(
    host: str,
    port: int,
    credentials: tuple[str, str] | None,
    topics: list[str],
    interval_s: float,
    window: Window,
    stop: Any,
    results: Any,
) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}")
    client.max_queued_messages_set(0)
    if credentials is not None:
        client.username_pw_set(*credentials)
    client.connect(host, port)
    client.loop_start()
    count = len(topics)
    started = time.time()
    published: Counter[int] = Counter()
    sent = 0
    while not stop.is_set():
        # Fix n of courier k goes out at started + (n * count + k) * interval / count.
        due = started + sent * interval_s / count
        delay = due - time.time()
        if delay > 0:
            time.sleep(min(delay, 0.05))
            continue
        courier = sent % count
        ts = time.time()
        payload = json.dumps({"lat": 52.5, "lon": 13.4, "ts": ts, "speed": 5.0})
        client.publish(topics[courier], payload, qos=0)
        start, end = window.bounds()
        if start and start <= ts <= end:
            published[courier] += 1
        sent += 1
    client.loop_stop()
    client.disconnect()
    results.put(("publisher", dict(published), sent / max(time.time() - started, 1e-9)))


# --- bridge sockets (worker processes) ----------------------------------------------------
@dataclass
class Socket:
    token: str
    channel: str
    courier: int | None  # the courier a customer follows; None for admins
    confirmed: float = 0.0
    frames: int = 0
    received: set[tuple[str, float]] = field(default_factory=set)


async def bridge_worker(
    url: str,
    sockets: list[Socket],
    concurrency: int,
    window: Window,
    stop: Any,
    results: Any,
) -> None:
    latencies: list[float] = []
    customer_latencies: list[float] = []
    failures: Counter[str] = Counter()
    gate = asyncio.Semaphore(concurrency)
    connected = 0
    decode = msgspec.json.Decoder().decode
    host, port = url.split("//")[1].split("/")[0].split(":")
    opened: list[LightWebSocket] = []

    def receiver(sock: Socket, confirmed: asyncio.Future[None]) -> Callable[[bytes], None]:
        def on_message(raw: bytes) -> None:
            now = time.time()
            frame = decode(raw)
            kind = frame["type"]
            if kind == "location":
                items = [frame]
            elif kind == "locations":
                items = frame["items"]
            else:
                if not confirmed.done():
                    if kind == "snapshot":
                        confirmed.set_result(None)
                    elif kind == "error":
                        confirmed.set_exception(RuntimeError(frame["code"]))
                return
            start, end = window.bounds()
            if not start:
                return
            in_window = False
            for item in items:
                ts = item["ts"]
                if start <= ts <= end:
                    in_window = True
                    latencies.append((now - ts) * 1000)
                    sock.received.add((item["id"], ts))
            if in_window:
                sock.frames += 1
                if kind == "location":
                    customer_latencies.append(latencies[-1])

        return on_message

    async def serve(sock: Socket) -> None:
        nonlocal connected
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            async with gate:
                websocket = await asyncio.wait_for(
                    open_websocket(host, int(port), "/ws", receiver(sock, confirmed)), 60
                )
                opened.append(websocket)
                websocket.send_text(json.dumps({"type": "auth", "token": sock.token}))
                websocket.send_text(json.dumps({"type": "subscribe", "channel": sock.channel}))
                await asyncio.wait_for(confirmed, 60)
            sock.confirmed = time.time()
            connected += 1
        except Exception as exc:
            failures[type(exc).__name__] += 1

    tasks = [asyncio.create_task(serve(sock)) for sock in sockets]
    while not stop.is_set():
        results.put(("progress", os.getpid(), connected, sum(failures.values())))
        await asyncio.sleep(1.0)
    await asyncio.gather(*tasks)
    lost_connections = sum(1 for w in opened if w.closed.done())
    if lost_connections:
        failures["closed by the server"] += lost_connections
    for websocket in opened:
        websocket.close()
    per_customer = [(s.courier, len(s.received)) for s in sockets if s.courier is not None]
    per_admin = [len(s.received) for s in sockets if s.courier is None and s.confirmed]
    confirmed_late = sum(1 for s in sockets if s.confirmed > window.bounds()[0])
    results.put(
        (
            "bridge",
            latencies,
            sum(s.frames for s in sockets),
            per_customer,
            per_admin,
            dict(failures),
            confirmed_late,
            customer_latencies,
        )
    )


def run_bridge_worker(
    url: str,
    sockets: list[Socket],
    concurrency: int,
    window: Window,
    stop: Any,
    results: Any,
) -> None:
    prepare_load_process()
    asyncio.run(bridge_worker(url, sockets, concurrency, window, stop, results))


# --- reference sockets: MQTT over Mosquitto's own WebSocket listener ---------------------
def mqtt_connect_packet(client_id: str) -> bytes:
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack("!H", len(client_id)) + client_id.encode()
    return bytes([0x10]) + remaining_length(len(body)) + body


def mqtt_subscribe_packet(topic: str) -> bytes:
    body = b"\x00\x01" + struct.pack("!H", len(topic)) + topic.encode() + b"\x00"
    return bytes([0x82]) + remaining_length(len(body)) + body


def remaining_length(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def mqtt_publish_payloads(data: bytes) -> list[bytes]:
    """The payloads of the QoS 0 PUBLISH packets in a WebSocket message."""
    payloads = []
    offset = 0
    while offset < len(data):
        header = data[offset]
        multiplier, length, offset = 1, 0, offset + 1
        while True:
            byte = data[offset]
            offset += 1
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            if not byte & 0x80:
                break
        packet = data[offset : offset + length]
        offset += length
        if header >> 4 == 3:
            topic_length = struct.unpack("!H", packet[:2])[0]
            payloads.append(packet[2 + topic_length :])
    return payloads


async def reference_worker(
    port: int, count: int, topic: str, window: Window, stop: Any, results: Any
) -> None:
    latencies: list[float] = []
    frames = 0
    failures: Counter[str] = Counter()
    decode = msgspec.json.Decoder().decode
    opened: list[LightWebSocket] = []

    def on_message(data: bytes) -> None:
        nonlocal frames
        now = time.time()
        start, end = window.bounds()
        for payload in mqtt_publish_payloads(data):
            ts = decode(payload)["ts"]
            if start and start <= ts <= end:
                frames += 1
                latencies.append((now - ts) * 1000)

    async def serve(n: int) -> None:
        try:
            websocket = await open_websocket(
                "127.0.0.1", port, "/mqtt", on_message, subprotocol="mqtt"
            )
            opened.append(websocket)
            websocket.send_binary(mqtt_connect_packet(f"ref-{os.getpid()}-{n}"))
            websocket.send_binary(mqtt_subscribe_packet(topic))
        except Exception as exc:
            failures[type(exc).__name__] += 1

    await asyncio.gather(*(serve(n) for n in range(count)))
    await asyncio.sleep(1.0)  # CONNACK and SUBACK
    results.put(("reference-ready", len(opened), dict(failures)))
    await asyncio.to_thread(stop.wait)
    for websocket in opened:
        websocket.close()
    results.put(("reference", latencies, frames, dict(failures)))


def run_reference_worker(
    port: int, count: int, topic: str, window: Window, stop: Any, results: Any
) -> None:
    prepare_load_process()
    asyncio.run(reference_worker(port, count, topic, window, stop, results))


# --- the orchestrator ---------------------------------------------------------------------
def prepare_load_process() -> None:
    """The measuring processes hold hundreds of thousands of received keys; a collector
    pause there would be charged to the server under test. They live for minutes: no GC."""
    raise_fd_limit()
    gc.disable()


def raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def seed(dsn: str, plan: Plan) -> None:
    promised = datetime.now(UTC) + timedelta(hours=1)
    with psycopg.connect(dsn, autocommit=True) as db, db.cursor() as cur:
        with cur.copy("COPY restaurants (id, name, lat, lon) FROM STDIN") as copy:
            for n in range(50):
                copy.write_row((f"r{n}", f"restaurant {n}", 52.5, 13.4))
        with cur.copy("COPY couriers (id, name) FROM STDIN") as copy:
            for n in range(plan.couriers):
                copy.write_row((f"c{n}", f"courier {n}"))
        columns = (
            "id, restaurant_id, customer_uid, pickup_lat, pickup_lon, dropoff_lat, "
            "dropoff_lon, promised_at, status, courier_id"
        )
        with cur.copy(f"COPY orders ({columns}) FROM STDIN") as copy:
            for n in range(plan.customers):
                copy.write_row(
                    (
                        f"o{n}",
                        f"r{n % 50}",
                        f"u{n}",
                        52.5,
                        13.4,
                        52.51,
                        13.41,
                        promised,
                        "out_for_delivery",
                        f"c{n % plan.couriers}",
                    )
                )


def wait_ready(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the bridge exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the bridge did not become ready:\n{log.read_text()}")


def bridge_metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if not line.startswith("#") and line.split("{")[0].split(" ")[0] == name
    )


def measure_bridge(plan: Plan, services: Any) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    port = free_port()
    seed(services.dsn, plan)
    signer = LocalSigner.from_data_dir(services.root)
    env = {
        **os.environ,
        **services.environment("bridge"),
        "FLEETPULSE_BRIDGE_PORT": str(port),
        "FLEETPULSE_AUTH_MODE": "local",
    }
    env.pop("FIREBASE_AUTH_EMULATOR_HOST", None)
    log_path = services.root / "bridge.log"
    with log_path.open("wb") as log:
        bridge = subprocess.Popen(
            [sys.executable, "-m", "bridge"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_fd_limit,
        )
    window = Window(ctx.Value("d", 0.0), ctx.Value("d", 0.0))
    stop_publisher, stop_clients = ctx.Event(), ctx.Event()
    results: Any = ctx.Queue()
    processes: list[Any] = []
    try:
        wait_ready(port, bridge, log_path)
        idle_rss = rss_kb(bridge.pid)
        topics = [f"fleet/couriers/c{n}/location" for n in range(plan.couriers)]
        publisher = ctx.Process(
            target=run_publisher,
            args=(
                services.mosquitto.host,
                services.mosquitto.port,
                (
                    services.credentials("loadgen").username,
                    services.credentials("loadgen").password,
                ),
                topics,
                plan.fix_interval_s,
                window,
                stop_publisher,
                results,
            ),
        )
        publisher.start()
        processes.append(publisher)
        say(
            f"stream running: {plan.couriers} couriers, "
            f"{plan.couriers / plan.fix_interval_s:.0f} fixes/s; opening sockets during it"
        )
        expiry = 6 * 3600
        sockets = [
            Socket(signer.issue(uid="ops", role="admin", ttl_s=expiry), "fleet", None)
            for _ in range(plan.admins)
        ] + [
            Socket(
                signer.issue(uid=f"u{n}", role="customer", ttl_s=expiry),
                f"order:o{n}",
                n % plan.couriers,
            )
            for n in range(plan.customers)
        ]
        shares = [sockets[k :: plan.client_processes] for k in range(plan.client_processes)]
        url = f"ws://127.0.0.1:{port}/ws"
        connect_started = time.monotonic()
        for share in shares:
            worker = ctx.Process(
                target=run_bridge_worker,
                args=(
                    url,
                    share,
                    plan.connect_concurrency,
                    window,
                    stop_clients,
                    results,
                ),
            )
            worker.start()
            processes.append(worker)
        progress: dict[int, tuple[int, int]] = {}
        total = len(sockets)
        while True:
            kind, pid, done, failed = results.get(timeout=300)
            if kind != "progress":
                raise RuntimeError(f"unexpected {kind} while connecting")
            progress[pid] = (done, failed)
            finished = sum(d + f for d, f in progress.values())
            if finished >= total and len(progress) == plan.client_processes:
                break
        connect_s = time.monotonic() - connect_started
        failed = sum(f for _, f in progress.values())
        say(f"{total - failed}/{total} sockets connected in {connect_s:.1f} s ({failed} failed)")
        # Opening 5,000 sockets while the stream runs leaves the bridge a backlog; measure the
        # steady state once it has caught up.
        time.sleep(plan.settle_s)
        cpu_start = cpu_seconds(bridge.pid)
        window.start.value = time.time() + 1.0
        window.end.value = window.start.value + plan.window_s
        coalesced_before = bridge_metric(port, "bridge_positions_coalesced_total")
        load_before = os.getloadavg()[0]
        profiler = None
        if plan.profile:
            # Collapsed stacks of the bridge during the window (py-spy, a dev dependency).
            profiler = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "-d",
                    str(int(plan.window_s)),
                    "-o",
                    plan.profile,
                    "-p",
                    str(bridge.pid),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        time.sleep(plan.window_s + 1.0)
        if profiler is not None:
            profiler.wait(60)
        cpu_end = cpu_seconds(bridge.pid)
        loaded_rss = rss_kb(bridge.pid)
        say(
            f"during the window: the bridge's event loop lagged at most "
            f"{bridge_metric(port, 'bridge_event_loop_lag_max_seconds') * 1000:.0f} ms; machine "
            f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )
        coalesced = bridge_metric(port, "bridge_positions_coalesced_total") - coalesced_before
        say(
            "bridge metrics: "
            + ", ".join(
                f"{name} {bridge_metric(port, name):.0f}"
                for name in (
                    "bridge_mqtt_messages_total",
                    "bridge_frames_out_total",
                    "bridge_relay_latency_seconds_count",
                    "bridge_mqtt_reconnects_total",
                    "bridge_mqtt_filters",
                    "bridge_closed_total",
                    "bridge_dropped_total",
                    "bridge_gc_seconds_total",
                )
            )
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("bridge_gc_seconds_total"):
                    say(f"bridge metrics: {line}")
        for line in log_path.read_text(errors="replace").splitlines():
            if "WARNING" in line or "ERROR" in line or "Traceback" in line:
                say(f"bridge log: {line[:300]}")
        stop_publisher.set()
        time.sleep(3.0)  # the last fixes of the window arrive
        stop_clients.set()
        messages: list[tuple[Any, ...]] = []
        pending = 1 + plan.client_processes
        while pending:
            message = results.get(timeout=120)
            if message[0] in ("publisher", "bridge"):
                messages.append(message)
                pending -= 1
        published: dict[int, int] = next(m[1] for m in messages if m[0] == "publisher")
        say(f"publisher: {next(m[2] for m in messages if m[0] == 'publisher'):.0f} fixes/s")
        every_fix = sum(published.values())
        latencies: list[float] = []
        customer_latencies: list[float] = []
        frames = missing = late = 0
        failures: Counter[str] = Counter()
        for message in messages:
            if message[0] != "bridge":
                continue
            _, lat, count, per_customer, per_admin, fails, confirmed_late, customer = message
            latencies.extend(lat)
            customer_latencies.extend(customer)
            frames += count
            failures.update(fails)
            late += confirmed_late
            missing += sum(max(0, published.get(c, 0) - got) for c, got in per_customer)
            missing += sum(max(0, every_fix - got) for got in per_admin)
        sockets_open = total - failed
        if customer_latencies:
            say(
                f"customer sockets alone: p50 {statistics.median(customer_latencies):.1f} ms, "
                f"p99 {percentile(customer_latencies, 0.99):.1f} ms (the firehose adds up to "
                "one batch interval)"
            )
        cpu_percent = (cpu_end - cpu_start) / plan.window_s * 100
        say(
            f"bridge: {len(latencies)} positions in the window, {frames} frames, "
            f"cpu {cpu_percent:.0f}% of a core, rss {idle_rss} kB idle -> {loaded_rss} kB "
            f"with {sockets_open} sockets; coalesced {coalesced:.0f}; "
            f"failures {dict(failures) or 'none'}"
        )
        return {
            "p50_ms": statistics.median(latencies) if latencies else float("nan"),
            "p99_ms": percentile(latencies, 0.99),
            "frames_per_s": frames / plan.window_s,
            "lost": max(0.0, missing - coalesced),
            "missing": float(missing),
            "coalesced": coalesced,
            "rss_kb_per_socket": (loaded_rss - idle_rss) / max(sockets_open, 1),
            "rss_kb_total_per_socket": loaded_rss / max(sockets_open, 1),
            "cpu_percent": cpu_percent,
            "connect_failures": float(failed + sum(failures.values())),
            "late": float(late),
        }
    finally:
        stop_publisher.set()
        stop_clients.set()
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
        bridge.send_signal(signal.SIGTERM)
        try:
            bridge.wait(20)
        except subprocess.TimeoutExpired:
            bridge.kill()


def measure_reference(plan: Plan) -> dict[str, float]:
    """Mosquitto's own WebSocket listener: no auth, no filtering, one topic to every socket."""
    ctx = mp.get_context("spawn")
    root = Path(tempfile.mkdtemp(prefix="fleetpulse-bench-ref-"))
    mqtt_port, ws_port = free_port(), free_port()
    # Mosquitto 2.0 needs one non-WebSocket listener to start at all.
    (root / "mosquitto.conf").write_text(
        f"listener {mqtt_port} 127.0.0.1\n"
        f"listener {ws_port} 127.0.0.1\nprotocol websockets\n"
        "allow_anonymous true\nmax_queued_messages 100000\nset_tcp_nodelay true\n"
    )
    broker = subprocess.Popen(
        ["mosquitto", "-c", str(root / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=raise_fd_limit,
    )
    window = Window(ctx.Value("d", 0.0), ctx.Value("d", 0.0))
    stop_publisher, stop_clients = ctx.Event(), ctx.Event()
    results: Any = ctx.Queue()
    processes: list[Any] = []
    try:
        time.sleep(0.5)
        per_worker = [
            plan.reference_sockets // plan.client_processes
            + (1 if k < plan.reference_sockets % plan.client_processes else 0)
            for k in range(plan.client_processes)
        ]
        for count in per_worker:
            worker = ctx.Process(
                target=run_reference_worker,
                args=(
                    ws_port,
                    count,
                    "bench/ref",
                    window,
                    stop_clients,
                    results,
                ),
            )
            worker.start()
            processes.append(worker)
        ready = 0
        for _ in per_worker:
            kind, n, failed = results.get(timeout=300)
            assert kind == "reference-ready", kind
            ready += n
            if failed:
                say(f"reference connection failures: {failed}")
        say(f"reference: {ready}/{plan.reference_sockets} sockets on Mosquitto's listener")
        publisher = ctx.Process(
            target=run_publisher,
            args=(
                "127.0.0.1",
                mqtt_port,
                None,
                ["bench/ref"],
                1.0 / plan.reference_rate,
                window,
                stop_publisher,
                results,
            ),
        )
        publisher.start()
        processes.append(publisher)
        time.sleep(1.0)
        cpu_start = cpu_seconds(broker.pid)
        window.start.value = time.time() + 0.5
        window.end.value = window.start.value + plan.window_s
        time.sleep(plan.window_s + 0.5)
        cpu_end = cpu_seconds(broker.pid)
        stop_publisher.set()
        time.sleep(2.0)
        stop_clients.set()
        latencies: list[float] = []
        frames = 0
        pending = 1 + len(per_worker)
        while pending:
            message = results.get(timeout=120)
            pending -= 1
            if message[0] == "reference":
                latencies.extend(message[1])
                frames += message[2]
        cpu_percent = (cpu_end - cpu_start) / plan.window_s * 100
        say(
            f"reference: {frames} frames in the window, p50 "
            f"{statistics.median(latencies) if latencies else float('nan'):.1f} ms, p99 "
            f"{percentile(latencies, 0.99):.1f} ms, Mosquitto cpu {cpu_percent:.0f}% of a core"
        )
        return {"frames_per_s": frames / plan.window_s, "p99_ms": percentile(latencies, 0.99)}
    finally:
        stop_publisher.set()
        stop_clients.set()
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--couriers", type=int, default=2000)
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--admins", type=int, default=20)
    parser.add_argument("--fix-interval", type=float, default=2.0, help="seconds per courier")
    parser.add_argument("--window", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--connect-concurrency", type=int, default=100)
    parser.add_argument("--reference-sockets", type=int, default=1000)
    parser.add_argument("--reference-rate", type=float, default=20.0, help="messages/s")
    parser.add_argument(
        "--settle", type=float, default=10.0, help="seconds between connecting and measuring"
    )
    parser.add_argument("--profile", default="", help="write py-spy collapsed stacks here")
    parser.add_argument(
        "--quick", action="store_true", help="a small mix (200 couriers, 500 customers, 5 admins)"
    )
    args = parser.parse_args()
    plan = Plan(
        couriers=200 if args.quick else args.couriers,
        customers=500 if args.quick else args.customers,
        admins=5 if args.quick else args.admins,
        fix_interval_s=args.fix_interval,
        window_s=10.0 if args.quick else args.window,
        client_processes=args.client_processes,
        connect_concurrency=args.connect_concurrency,
        reference_sockets=100 if args.quick else args.reference_sockets,
        reference_rate=args.reference_rate,
        profile=args.profile,
        settle_s=args.settle,
    )
    if plan.customers > 3 * plan.couriers:
        parser.error("a courier carries at most 3 orders: --customers <= 3 * --couriers")
    raise_fd_limit()
    say(f"plan: {plan}")
    with running_services() as services:
        result = measure_bridge(plan, services)
    reference = measure_reference(plan)
    print(
        f"bridge p99_ms={result['p99_ms']:.1f} p50_ms={result['p50_ms']:.1f} "
        f"frames_per_s={result['frames_per_s']:.0f} lost={result['lost']:.0f} "
        f"rss_kb_per_socket={result['rss_kb_per_socket']:.1f} "
        f"reference_frames_per_s={reference['frames_per_s']:.0f}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
