"""`python -m api`: migrate the schema, then serve the API with uvicorn on settings.api_port."""

from __future__ import annotations

import logging
import sys

import uvicorn

from api.app import create_app
from auth import AuthConfigError
from broker import CredentialsError
from config import ConfigError, load_settings
from config.startup import cannot_start
from store import MigrationError, apply_migrations


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings()
        applied = apply_migrations(settings.dsn)
        if applied:
            logging.getLogger("api").info("applied migrations %s", applied)
        app = create_app(settings)
    except (ConfigError, AuthConfigError, CredentialsError, MigrationError) as exc:
        return cannot_start("api", exc)
    except OSError as exc:
        return cannot_start("api", f"cannot reach the database {settings.dsn}: {exc}")
    print(
        f"[api] serving on http://{settings.api_host}:{settings.api_port} (docs at /docs)",
        flush=True,
    )
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.api_port,
        timeout_graceful_shutdown=int(settings.api_drain_timeout_s),
        log_level="info",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
