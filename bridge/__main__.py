"""`python -m bridge`: the WebSocket bridge on settings.bridge_host:bridge_port."""

from __future__ import annotations

import gc
import logging
import sys

import uvicorn

from auth import AuthConfigError
from bridge.app import create_app
from broker.accounts import CredentialsError
from config import ConfigError, load_settings
from config.startup import cannot_start

# Frames up to this size reach the bridge, which answers anything over the protocol's limit
# with an error frame; beyond it uvicorn closes the socket with 1009.
TRANSPORT_MAX_FRAME_BYTES = 1024 * 1024


def tune_garbage_collector() -> None:
    """Thousands of sockets mean millions of long-lived objects, and CPython's default
    thresholds (700, 10, 10) promote every briefly-queued frame and fix into the oldest
    generation, whose full collections then stall the event loop for hundreds of ms
    (measured: docs/benchmarks.md). A larger young generation lets those die young."""
    gc.collect()
    gc.freeze()  # modules and start-up state: never garbage, never scanned again
    gc.set_threshold(50_000, 20, 100)


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings()
        app = create_app(settings)
    except (ConfigError, AuthConfigError, CredentialsError) as exc:
        return cannot_start("bridge", exc)
    tune_garbage_collector()
    uvicorn.run(
        app,
        host=settings.bridge_host,
        port=settings.bridge_port,
        ws="websockets-sansio",
        ws_max_size=TRANSPORT_MAX_FRAME_BYTES,
        ws_ping_interval=settings.bridge_ws_ping_interval_s,
        ws_ping_timeout=settings.bridge_ws_ping_interval_s,
        ws_per_message_deflate=settings.bridge_ws_deflate,
        timeout_graceful_shutdown=int(settings.bridge_drain_timeout_s),
        log_level="info",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
