from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, load_settings
from config.settings import PROJECT_ROOT


def test_defaults_point_at_the_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "POSTGRES_PORT", "MQTT_PORT", "DATA_DIR"):
        monkeypatch.delenv(f"FLEETPULSE_{name}", raising=False)
    settings = load_settings(_env_file=None)
    assert settings.mqtt_port == 1883
    assert settings.postgres_port == 54320
    assert settings.api_port == 8000
    assert settings.bridge_port == 8001
    assert settings.ingest_metrics_port == 9101
    assert settings.dsn == "postgresql://postgres@127.0.0.1:54320/fleetpulse"
    assert settings.data_dir == PROJECT_ROOT / ".var"


def test_environment_overrides_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETPULSE_MQTT_PORT", "2883")
    monkeypatch.setenv("FLEETPULSE_DATABASE_URL", "postgresql://u@db:5432/x")
    monkeypatch.setenv("FLEETPULSE_DATA_DIR", "relative/dir")
    settings = load_settings(_env_file=None)
    assert settings.mqtt_port == 2883
    assert settings.dsn == "postgresql://u@db:5432/x"
    assert settings.data_dir == PROJECT_ROOT / "relative" / "dir"


def test_dotenv_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEETPULSE_API_PORT", raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("FLEETPULSE_API_PORT=9000\n")
    assert load_settings(_env_file=env_file).api_port == 9000


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FLEETPULSE_MQTT_PORT", "not-a-port"),
        ("FLEETPULSE_POSTGRES_PORT", "70000"),
        ("FLEETPULSE_DATABASE_URL", "mysql://x"),
        ("FLEETPULSE_TOPIC_PREFIX", "bad/+/prefix"),
        ("FLEETPULSE_ENVIRONMENT", "staging"),
    ],
)
def test_invalid_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load_settings(_env_file=None)
