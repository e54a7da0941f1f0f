from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

TOPIC_PREFIX_PATTERN = r"^[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_-]{1,64})*$"


class ConfigError(Exception):
    """Settings that cannot be used; the message names the environment variable."""


class Settings(BaseSettings):
    """Every tunable of every process. Environment: FLEETPULSE_<FIELD>, or a .env file."""

    model_config = SettingsConfigDict(
        env_prefix="FLEETPULSE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    environment: Literal["local", "production"] = "local"
    data_dir: Path = PROJECT_ROOT / ".var"

    # The local stack and the addresses every process connects to.
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(default=1883, ge=1, le=65535)
    mqtt_tls_port: int = Field(default=8883, ge=1, le=65535)
    # The MQTT account of this process (broker security gives each service its own).
    mqtt_username: str = ""
    mqtt_password: SecretStr = SecretStr("")
    # Broker security: the dynamic-security admin (the api provisions devices with it; empty
    # password = read <data_dir>/secrets/mqtt-accounts.json), TLS and the optional websockets.
    mqtt_admin_username: str = "admin"
    mqtt_admin_password: SecretStr = SecretStr("")
    mqtt_tls_host: str = ""
    mqtt_tls_cafile: Path | None = None
    mqtt_tls_certfile: Path | None = None
    mqtt_tls_keyfile: Path | None = None
    mqtt_websockets_port: int = Field(default=0, ge=0, le=65535)
    mqtt_dynsec_plugin: Path | None = None
    postgres_port: int = Field(default=54320, ge=1, le=65535)
    database_url: str = ""
    api_port: int = Field(default=8000, ge=1, le=65535)
    bridge_port: int = Field(default=8001, ge=1, le=65535)
    ingest_metrics_port: int = Field(default=9101, ge=0, le=65535)
    ingest_metrics_host: str = "127.0.0.1"

    # The wire protocol.
    topic_prefix: str = Field(default="fleet", pattern=TOPIC_PREFIX_PATTERN)
    max_future_skew_s: float = Field(default=300.0, ge=0)

    # Ingest.
    ingest_batch_rows: int = Field(default=5000, ge=1, le=1_000_000)
    ingest_batch_age_ms: float = Field(default=50.0, gt=0, le=60_000)
    ingest_session_expiry_s: int = Field(default=86_400, ge=0)
    ingest_shared_group: str = Field(default="ingest", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    ingest_client_id: str = ""
    ingest_drain_timeout_s: float = Field(default=10.0, gt=0)
    # MQTT 5 Receive Maximum: how many unacknowledged QoS 1 messages the broker may have in
    # flight to one worker. It must cover a full batch plus the one being committed.
    ingest_receive_maximum: int = Field(default=20_000, ge=1, le=65_535)
    # Cap of the jittered exponential backoff when the broker or the database is down.
    ingest_retry_max_s: float = Field(default=5.0, gt=0, le=300)
    ingest_keepalive_s: int = Field(default=30, ge=5, le=65_535)
    # Batches written at once, each on its own connection; acks stay in arrival order.
    ingest_db_connections: int = Field(default=2, ge=1, le=16)

    # REST API.
    api_host: str = "127.0.0.1"
    api_db_pool_size: int = Field(default=10, ge=1, le=200)
    api_drain_timeout_s: float = Field(default=10.0, gt=0)
    # A courier without a fix or presence message for this long counts as offline.
    presence_timeout_s: float = Field(default=120.0, gt=0)
    # The API's report applier and outbox relay (off only to run them elsewhere, or in tests
    # that stop between commit and publish).
    report_applier: bool = True
    outbox_relay: bool = True
    # A status report that skips a step waits this long for the report it may have overtaken.
    report_reorder_window_s: float = Field(default=5.0, ge=0, le=600)
    # An active order's ETA is recomputed from new fixes at most this often.
    eta_interval_s: float = Field(default=5.0, gt=0)
    eta_default_speed_mps: float = Field(default=5.0, gt=0, le=60)
    eta_detour_factor: float = Field(default=1.3, ge=1, le=5)
    # Fixes older than this are dropped, whole chunks at a time.
    positions_retention_days: float = Field(default=90.0, gt=0)
    retention_interval_s: float = Field(default=3600.0, gt=0)

    # Auth (the bridge and the API). Unset auth_mode means local in the local environment and
    # firebase in production.
    auth_mode: Literal["local", "firebase"] | None = None
    firebase_project_id: str = ""
    auth_clock_skew_s: int = Field(default=0, ge=0, le=60)

    # The WebSocket bridge.
    bridge_host: str = "127.0.0.1"
    bridge_client_id: str = ""
    bridge_auth_timeout_s: float = Field(default=10.0, gt=0)
    bridge_reauth_grace_s: float = Field(default=30.0, gt=0)
    bridge_max_frame_bytes: int = Field(default=16 * 1024, ge=256, le=1024 * 1024)
    bridge_max_frames_per_s: int = Field(default=50, ge=1)
    bridge_max_forbidden: int = Field(default=3, ge=1)
    bridge_event_queue: int = Field(default=2000, ge=10)
    bridge_fleet_batch_ms: float = Field(default=50.0, ge=5, le=1000)
    bridge_unsubscribe_linger_s: float = Field(default=5.0, ge=0)
    bridge_ws_ping_interval_s: float = Field(default=20.0, gt=0)
    bridge_ws_deflate: bool = False
    bridge_drain_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return value if value.is_absolute() else (PROJECT_ROOT / value).resolve()

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL")
        return value

    @property
    def dsn(self) -> str:
        """The database to use: database_url if set, else the local stack's cluster."""
        if self.database_url:
            return self.database_url
        return f"postgresql://postgres@127.0.0.1:{self.postgres_port}/fleetpulse"

    @property
    def effective_auth_mode(self) -> Literal["local", "firebase"]:
        if self.auth_mode is not None:
            return self.auth_mode
        return "firebase" if self.environment == "production" else "local"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://{self.mqtt_host}:{self.mqtt_port}"


def load_settings(**overrides: object) -> Settings:
    """Read the settings; a validation failure becomes a ConfigError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            variable = f"FLEETPULSE_{field.upper()}"
            problems.append(f"{variable}={error.get('input')!r}: {error['msg']}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from None
