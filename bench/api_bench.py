"""bench/api: the REST API's read paths on a realistic history.

Starts its own Mosquitto and PostgreSQL + TimescaleDB (the tests' set-up), loads 10 million
fixes of 10,000 couriers over 7 days (generate_series in SQL), the last_positions table and
a week of orders, starts `python -m api` as its own process, and times over HTTP the medians
of N calls each of: the last positions of all couriers, one courier's 24 h track at 1-minute
resolution, and the analytics of the last hour. The reference, measured in the same run, is
the same query straight through psycopg (no HTTP, no API), and the HTTP floor (/healthz).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from auth import LocalSigner  # noqa: E402
from stack.process import free_port  # noqa: E402
from tests.services import Services, running_services  # noqa: E402

DAY_S = 86_400


def say(message: str) -> None:
    print(f"[bench api] {message}", flush=True)


def load(dsn: str, *, couriers: int, fixes: int, days: int) -> float:
    """Fill positions, last_positions, restaurants, couriers and orders; returns seconds."""
    per_courier = fixes // couriers
    step_s = days * DAY_S / per_courier
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '512MB'")
        # Build the unique index once at the end instead of maintaining it row by row.
        conn.execute("DROP INDEX positions_source_time")
        conn.execute("DROP INDEX positions_fix_time_brin")
        t0 = datetime.now(UTC) - timedelta(days=days)
        # Time-major order, as fixes arrive in reality: chunks fill one after another.
        batches = 10
        per_batch = per_courier // batches
        for batch in range(batches):
            conn.execute(
                """
                INSERT INTO positions (source_kind, source_id, fix_time, lat, lon, speed,
                                       heading, accuracy, battery, received_at)
                SELECT 'courier', 'c-' || c, t,
                       52.3 + mod(c, 100) * 0.004 + sin(i / 50.0) * 0.01,
                       13.1 + (c / 100) * 0.006 + cos(i / 50.0) * 0.01,
                       mod(i, 12)::real, mod((i * 7), 360)::real, 5, 80, t
                FROM generate_series(%s::int, %s::int) AS i,
                     generate_series(1, %s::int) AS c,
                     LATERAL (SELECT %s::timestamptz
                              + make_interval(secs => i * %s + mod(c, 97)) AS t) AS at
                """,
                (batch * per_batch, (batch + 1) * per_batch - 1, couriers, t0, step_s),
            )
            say(f"  positions: {(batch + 1) * per_batch * couriers:,} rows")
        conn.execute(
            "CREATE UNIQUE INDEX positions_source_time ON positions"
            " (source_kind, source_id, fix_time)"
        )
        conn.execute(
            "CREATE INDEX positions_fix_time_brin ON positions USING brin (fix_time)"
            " WITH (pages_per_range = 32)"
        )
        conn.execute(
            """
            INSERT INTO last_positions (source_kind, source_id, fix_time, lat, lon, speed,
                                        heading, accuracy, battery, received_at)
            SELECT DISTINCT ON (source_id) source_kind, source_id, fix_time, lat, lon, speed,
                   heading, accuracy, battery, received_at
            FROM positions WHERE fix_time > now() - interval '1 hour'
            ORDER BY source_id, fix_time DESC
            """
        )
        conn.execute(
            "INSERT INTO couriers (id, name) SELECT 'c-' || c, 'Courier ' || c"
            " FROM generate_series(1, %s::int) c",
            (couriers,),
        )
        conn.execute(
            "INSERT INTO restaurants (id, name, lat, lon) SELECT 'r-' || r, 'Restaurant ' || r,"
            " 52.5, 13.4 FROM generate_series(1, 200) r"
        )
        # About 20 orders a minute for the week; most delivered, some under way.
        conn.execute(
            """
            INSERT INTO orders (id, restaurant_id, customer_uid, pickup_lat, pickup_lon,
                                dropoff_lat, dropoff_lon, promised_at, status, courier_id,
                                created_at, updated_at, delivered_at)
            SELECT 'o-' || n, 'r-' || (mod(n, 200) + 1), 'cust-' || mod(n, 50000), 52.5, 13.4,
                   52.52, 13.45, created + interval '35 minutes',
                   CASE WHEN created > now() - interval '40 minutes' THEN 'picked_up'
                        WHEN mod(n, 50) = 0 THEN 'cancelled' ELSE 'delivered' END,
                   CASE WHEN mod(n, 50) = 0 AND created <= now() - interval '40 minutes'
                        THEN NULL ELSE 'c-' || (mod(n, %s::int) + 1) END,
                   created, created,
                   CASE WHEN created <= now() - interval '40 minutes' AND mod(n, 50) <> 0
                        THEN created + make_interval(secs => 900 + mod(n * 37, 1800)) END
            FROM generate_series(1, %s::int) n,
                 LATERAL (SELECT now() - make_interval(secs => n * 3.0) AS created) c
            """,
            (couriers, days * DAY_S // 3),
        )
        conn.execute("ANALYZE")
    return time.perf_counter() - started


def median_ms(call: Callable[[], object], *, runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def start_api(services: Services, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **services.environment("api"),
        "FLEETPULSE_API_PORT": str(port),
        "FLEETPULSE_AUTH_MODE": "local",
        "FLEETPULSE_ENVIRONMENT": "local",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "api"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("the API did not become ready within 60 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--couriers", type=int, default=10_000)
    parser.add_argument("--fixes", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--calls", type=int, default=25)
    args = parser.parse_args()
    with running_services() as services:
        say(f"loading {args.fixes:,} fixes of {args.couriers:,} couriers over {args.days} days")
        seconds = load(services.dsn, couriers=args.couriers, fixes=args.fixes, days=args.days)
        say(f"loaded in {seconds:.0f} s ({args.fixes / seconds:,.0f} rows/s)")
        port = free_port()
        api = start_api(services, port)
        try:
            token = LocalSigner.from_data_dir(services.root).issue(uid="bench", role="admin")
            end = datetime.now(UTC)
            track_params = {
                "start": (end - timedelta(hours=24)).isoformat(),
                "end": end.isoformat(),
                "resolution_s": "60",
            }
            courier = f"c-{args.couriers // 2}"
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            ) as client:

                def get(path: str, **params: str) -> httpx.Response:
                    response = client.get(path, params=params)
                    response.raise_for_status()
                    return response

                sizes = {
                    "last positions": len(get("/positions/latest").json()["items"]),
                    "track points": len(
                        get(f"/couriers/{courier}/track", **track_params).json()["points"]
                    ),
                    "analytics fixes": get("/analytics").json()["fixes_total"],
                }
                say("answers: " + ", ".join(f"{k} {v:,}" for k, v in sizes.items()))
                floor = median_ms(lambda: get("/healthz"), runs=args.calls)
                last_ms = median_ms(lambda: get("/positions/latest"), runs=args.calls)
                columns_ms = median_ms(
                    lambda: get("/positions/latest", layout="columns"), runs=args.calls
                )
                track_ms = median_ms(
                    lambda: get(f"/couriers/{courier}/track", **track_params), runs=args.calls
                )
                analytics_ms = median_ms(lambda: get("/analytics"), runs=args.calls)
            refs = reference_ms(services.dsn, courier, end, calls=args.calls)
        finally:
            api.terminate()
            api.wait(timeout=30)
    say(f"HTTP floor (/healthz) median {floor:.1f} ms")
    say(f"last_positions with layout=columns: HTTP median {columns_ms:.1f} ms")
    for name, http_ms, limit in (
        ("last_positions", last_ms, 50),
        ("track", track_ms, 100),
        ("analytics", analytics_ms, 200),
    ):
        ref = refs[name]
        say(
            f"{name}: HTTP median {http_ms:.1f} ms (target < {limit}); the same SQL via "
            f"psycopg {ref:.1f} ms; ratio {http_ms / ref:.2f}x"
        )
    print(
        f"api last_positions_ms={last_ms:.1f} track_ms={track_ms:.1f} "
        f"analytics_ms={analytics_ms:.1f}",
        flush=True,
    )
    return 0


def reference_ms(dsn: str, courier: str, end: datetime, *, calls: int) -> dict[str, float]:
    """The API's own queries straight through psycopg: what HTTP and the API add is the
    difference."""
    from store.analytics import COURIERS_ACTIVE_SQL, FIXES_SQL, ORDERS_SQL
    from store.positions import LAST_POSITIONS_ROWS_SQL, TRACK_BUCKETS_SQL
    from store.presence import presence_query

    start_1h = end - timedelta(hours=1)
    params = {"start": start_1h, "end": end, "bucket": 60}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")

        def analytics() -> None:
            for sql in (ORDERS_SQL, COURIERS_ACTIVE_SQL, FIXES_SQL):
                conn.execute(sql, params).fetchall()
            conn.execute(*presence_query()).fetchall()

        return {
            "last_positions": median_ms(
                lambda: conn.execute(LAST_POSITIONS_ROWS_SQL, ()).fetchall(), runs=calls
            ),
            "track": median_ms(
                lambda: conn.execute(
                    TRACK_BUCKETS_SQL, (60, "courier", courier, end - timedelta(hours=24), end)
                ).fetchall(),
                runs=calls,
            ),
            "analytics": median_ms(analytics, runs=calls),
        }


if __name__ == "__main__":
    sys.exit(main())
