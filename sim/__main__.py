"""`python -m sim`: a living fleet for the demo, or a flat-out load generator for benchmarks.

python -m sim demo --couriers 25 --vehicles 5 --order-interval 5 --seed 1
python -m sim load --couriers 100 --rate 2000 --count 200000
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import sys
import time

from broker.accounts import CredentialsError
from config import ConfigError, load_settings
from config.startup import cannot_start
from sim.demo import DemoOptions, run_demo
from sim.geo import BERLIN, CityBox
from sim.load import LoadOptions, run_load


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sim",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="mode", required=True)

    demo = sub.add_parser("demo", help="couriers with a day's work, orders through the API")
    demo.add_argument("--couriers", type=int, default=25)
    demo.add_argument("--vehicles", type=int, default=5)
    demo.add_argument(
        "--owntracks-share",
        type=float,
        default=0.2,
        help="fraction of couriers whose phone runs the OwnTracks app",
    )
    demo.add_argument(
        "--order-interval",
        type=float,
        default=5.0,
        help="seconds between new orders on average (0: none)",
    )
    demo.add_argument("--restaurants", type=int, default=6)
    demo.add_argument(
        "--emergency-per-hour",
        type=float,
        default=0.02,
        help="chance per courier and hour of an emergency alert",
    )
    demo.add_argument(
        "--dead-zone-per-hour",
        type=float,
        default=6.0,
        help="how often per hour a courier loses coverage",
    )
    demo.add_argument(
        "--city",
        type=CityBox.parse,
        default=BERLIN,
        help="south,west,north,east (default: central Berlin)",
    )
    demo.add_argument("--api-url", default=None, help="default: the local API")
    demo.add_argument("--token", default=None, help="admin token (default: minted locally)")
    demo.add_argument("--seed", type=int, default=None)
    demo.add_argument(
        "--first-customer",
        default=None,
        help="uid of the customer whose order comes first (so a demo token has one)",
    )
    demo.add_argument("--duration", type=float, default=0.0, help="seconds; 0 runs until Ctrl-C")
    demo.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="fast-forward: simulated seconds per real second (tests, impatient demos)",
    )

    load = sub.add_parser("load", help="flat-out fixes from K couriers, no realism")
    load.add_argument("--couriers", type=int, default=100)
    load.add_argument("--rate", type=float, default=0.0, help="total msg/s; 0: as fast as possible")
    load.add_argument("--count", type=int, default=100_000, help="messages in all")
    load.add_argument("--username", default=None)
    load.add_argument("--password", default=None)
    load.add_argument("--seed", type=int, default=1)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        settings = load_settings()
    except ConfigError as exc:
        return cannot_start("sim", exc)
    seed = args.seed if args.seed is not None else int(time.time())

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if args.mode == "load":
            options = LoadOptions(
                couriers=args.couriers,
                rate=args.rate,
                count=args.count,
                seed=seed,
                username=args.username,
                password=args.password,
            )
            try:
                return await run_load(settings, options, stop=stop)
            except CredentialsError as exc:
                return cannot_start("sim", exc)
        options_demo = DemoOptions(
            couriers=args.couriers,
            vehicles=args.vehicles,
            owntracks_share=args.owntracks_share,
            order_interval_s=args.order_interval,
            restaurants=args.restaurants,
            emergency_per_hour=args.emergency_per_hour,
            dead_zone_per_hour=args.dead_zone_per_hour,
            city=args.city,
            api_url=args.api_url or f"http://127.0.0.1:{settings.api_port}",
            admin_token=args.token,
            seed=seed,
            duration_s=args.duration,
            time_scale=args.time_scale,
            first_customer=args.first_customer,
        )
        print(f"[sim] seed {seed}", flush=True)
        return await run_demo(settings, options_demo, rng=random.Random(seed), stop=stop)

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
