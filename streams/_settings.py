"""The one configuration object: built once at start from POLKU_* variables, then passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas import ContactChannel
from streams._errors import ConfigError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POLKU_", frozen=True, extra="forbid")

    kafka_bootstrap: Annotated[
        str | None,
        Field(description="host:port[,host:port]; unset means the demo starts a local broker"),
    ] = None
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None

    app_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]+$")] = "polku"
    data_dir: Path = Path("var/polku")
    journeys_dir: Annotated[
        Path | None, Field(description="directory of journey YAML files; unset = built-in library")
    ] = None

    partitions: Annotated[int, Field(ge=1, le=10_000)] = 4
    replication_factor: Annotated[int, Field(ge=1)] = 1
    touchpoints_topic: str = "polku.touchpoints"
    dead_letter_topic: str = "polku.deadletter"
    actions_topic_prefix: str = "actions."

    timer_poll_seconds: Annotated[float, Field(gt=0, le=60)] = 0.1
    session_timeout_seconds: Annotated[float, Field(gt=0)] = 6.0
    heartbeat_interval_seconds: Annotated[float, Field(gt=0)] = 1.0
    commit_interval_seconds: Annotated[float, Field(gt=0)] = 1.0

    metrics_host: str = "127.0.0.1"
    metrics_port: Annotated[int | None, Field(ge=0, le=65535)] = None
    log_level: Literal["debug", "info", "warn", "error"] = "info"

    def action_topic(self, channel: ContactChannel | str) -> str:
        return f"{self.actions_topic_prefix}{ContactChannel(channel).value}"

    @property
    def action_topics(self) -> dict[ContactChannel, str]:
        return {channel: self.action_topic(channel) for channel in ContactChannel}

    def require_bootstrap(self) -> str:
        if not self.kafka_bootstrap:
            raise ConfigError(
                "POLKU_KAFKA_BOOTSTRAP is not set: give the broker as host:port "
                "(or run `polku demo`, which starts a local broker itself)"
            )
        return self.kafka_bootstrap

    def kafka_client_config(self) -> dict[str, str | int | float | bool]:
        """librdkafka (confluent-kafka) settings for this deployment's broker."""
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.require_bootstrap(),
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_security_protocol.startswith("SASL"):
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
            config["sasl.username"] = self.kafka_sasl_username or ""
            password = self.kafka_sasl_password
            config["sasl.password"] = password.get_secret_value() if password else ""
        return config

    def to_env(self) -> dict[str, str]:
        """These settings as POLKU_* variables, to start another process with the same config."""
        env = {}
        for name, value in self.model_dump(exclude_none=True).items():
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"POLKU_{name.upper()}"] = str(value)
        return env
