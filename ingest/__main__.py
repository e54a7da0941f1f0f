"""`python -m ingest`: one ingest worker, configured by FLEETPULSE_* settings."""

from __future__ import annotations

import asyncio
import logging
import sys

from broker.accounts import CredentialsError
from config import ConfigError, load_settings
from config.startup import cannot_start
from ingest.metrics import IngestMetrics
from ingest.worker import Ingestor


def main() -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = load_settings()
    except ConfigError as exc:
        return cannot_start("ingest", exc)
    metrics = IngestMetrics()
    try:
        metrics.serve(settings.ingest_metrics_port, host=settings.ingest_metrics_host)
    except OSError as exc:
        return cannot_start(
            "ingest",
            f"cannot serve metrics on port {settings.ingest_metrics_port} ({exc}); "
            "choose another with FLEETPULSE_INGEST_METRICS_PORT (0 turns them off)",
        )
    try:
        ingestor = Ingestor(settings, metrics=metrics)
    except CredentialsError as exc:
        return cannot_start("ingest", exc)
    asyncio.run(ingestor.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
