from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from journeys import Engine
from schemas import ContactChannel
from streams import ConfigError, Settings
from streams._metrics import WorkerMetrics
from streams._worker import build_app


def test_reads_polku_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLKU_KAFKA_BOOTSTRAP", "kafka:9092")
    monkeypatch.setenv("POLKU_PARTITIONS", "12")
    settings = Settings()
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.partitions == 12


def test_is_frozen() -> None:
    settings = Settings(kafka_bootstrap="k:1")
    with pytest.raises(ValidationError):
        settings.partitions = 3  # type: ignore[misc]


def test_rejects_unknown_and_bad_values() -> None:
    with pytest.raises(ValidationError):
        Settings(partitions=0)
    with pytest.raises(ValidationError):
        Settings(app_id="has space")


def test_a_missing_bootstrap_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POLKU_KAFKA_BOOTSTRAP", raising=False)
    with pytest.raises(ConfigError, match="POLKU_KAFKA_BOOTSTRAP is not set"):
        Settings().require_bootstrap()


def test_one_action_topic_per_channel() -> None:
    settings = Settings(kafka_bootstrap="k:1", actions_topic_prefix="a.")
    assert settings.action_topics[ContactChannel.SMS] == "a.sms"
    assert settings.action_topic("staff_task") == "a.staff_task"
    with pytest.raises(ValueError, match="carrier_pigeon"):
        settings.action_topic("carrier_pigeon")


def test_sasl_password_is_secret_but_reaches_the_client_config() -> None:
    settings = Settings(
        kafka_bootstrap="k:1",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="polku",
        kafka_sasl_password=SecretStr("hunter2"),
    )
    assert "hunter2" not in repr(settings)
    assert settings.kafka_client_config()["sasl.password"] == "hunter2"


def test_to_env_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(
        kafka_bootstrap="k:1", partitions=7, metrics_port=9108, gc_thresholds=(1000, 5, 5)
    )
    for key, value in original.to_env().items():
        monkeypatch.setenv(key, value)
    assert Settings() == original


def test_table_memory_is_bounded_by_default_and_reaches_the_tables() -> None:
    settings = Settings(kafka_bootstrap="k:1", table_write_buffer_bytes=4 * 1024 * 1024)
    app, _ = build_app(settings, Engine([]), WorkerMetrics())

    for name in ("journey_state", "aliases"):
        options = app.tables[name].options
        assert options is not None
        assert options["write_buffer_size"] == 4 * 1024 * 1024
        assert options["max_write_buffer_number"] == 2
        assert options["block_cache_size"] == Settings().table_block_cache_bytes == 16 * 1024**2
    with pytest.raises(ValidationError):
        Settings(table_block_cache_bytes=1)
