"""The one configuration object: built once at start from POLKU_* variables, then passed down."""

from __future__ import annotations

from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
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
    contact_policy_file: Annotated[
        Path | None,
        Field(description="YAML contact policy; unset = the strict defaults (README)"),
    ] = None
    default_timezone: Annotated[
        str, Field(description="IANA time zone of customers whose profile names none")
    ] = "UTC"

    partitions: Annotated[int, Field(ge=1, le=10_000)] = 4
    replication_factor: Annotated[int, Field(ge=1)] = 1
    touchpoints_topic: Annotated[
        str, Field(description="channels produce here, keyed by any identifier")
    ] = "polku.touchpoints"
    customer_topic: Annotated[
        str, Field(description="the identity agent's output, keyed by the canonical customer")
    ] = "polku.touchpoints.by-customer"
    identity_topic: Annotated[
        str, Field(description="the identity agent's own link records, keyed by identifier")
    ] = "polku.identity"
    dead_letter_topic: str = "polku.deadletter"
    suppressed_topic: str = "polku.suppressed"
    actions_topic_prefix: str = "actions."

    timer_poll_seconds: Annotated[float, Field(gt=0, le=60)] = 0.1
    session_timeout_seconds: Annotated[float, Field(gt=0)] = 6.0
    heartbeat_interval_seconds: Annotated[float, Field(gt=0)] = 1.0
    commit_interval_seconds: Annotated[float, Field(gt=0)] = 1.0

    metrics_host: str = "127.0.0.1"
    metrics_port: Annotated[int | None, Field(ge=0, le=65535)] = None
    log_level: Literal["debug", "info", "warn", "error"] = "info"

    # --- HTTP collector (`polku collector`): channels POST touchpoints, polku produces them ---
    collector_host: Annotated[
        str, Field(description="address to bind; 127.0.0.1 unless a proxy in front needs more")
    ] = "127.0.0.1"
    collector_port: Annotated[int, Field(ge=1, le=65535)] = 8080
    collector_api_keys: Annotated[
        SecretStr | None,
        Field(description="accepted X-API-Key values, comma-separated (two during a rotation)"),
    ] = None
    collector_max_body_bytes: Annotated[int, Field(ge=1_024, le=64 * 1024 * 1024)] = 1024 * 1024
    collector_max_batch: Annotated[int, Field(ge=1, le=10_000)] = 500
    collector_ack_timeout_seconds: Annotated[
        float,
        Field(gt=0, le=300, description="how long a POST waits for the broker's acks before 503"),
    ] = 10.0

    # --- senders (`polku sender ...`): action topic in, deliveries and receipts out ---
    sender_group_id: Annotated[
        str | None, Field(description="consumer group; unset = <app_id>.sender.<channel>")
    ] = None
    sender_state_dir: Annotated[
        Path | None, Field(description="where the dedupe store lives; unset = <data_dir>/senders")
    ] = None
    sender_max_attempts: Annotated[int, Field(ge=1, le=100)] = 5
    sender_backoff_initial_seconds: Annotated[float, Field(gt=0, le=3600)] = 1.0
    sender_backoff_max_seconds: Annotated[
        float, Field(gt=0, le=3600, description="also the cap on an honoured Retry-After")
    ] = 60.0
    sender_commit_interval_seconds: Annotated[float, Field(gt=0)] = 1.0
    sender_poll_seconds: Annotated[float, Field(gt=0, le=10)] = 0.5
    sender_defer_recheck_seconds: Annotated[
        float,
        Field(gt=0, le=3600, description="longest pause of a partition for an early not_before"),
    ] = 60.0
    sender_receipt_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    sender_dedupe_retention_days: Annotated[int, Field(ge=1, le=3650)] = 30
    sender_contacts_file: Annotated[
        Path | None,
        Field(description="JSON {customer_id: {email, phone, first_name}} for reference senders"),
    ] = None
    sender_templates_dir: Annotated[
        Path | None, Field(description="template folder; unset = the built-in streams/templates")
    ] = None

    # --- SMTP (`polku sender email`) ---
    smtp_host: str = "localhost"
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = 587
    smtp_security: Annotated[
        Literal["starttls", "tls", "none"],
        Field(description="starttls (port 587), tls (implicit, port 465) or none (local relay)"),
    ] = "starttls"
    smtp_ca_file: Annotated[
        Path | None, Field(description="CA bundle to verify the server; unset = system store")
    ] = None
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: Annotated[
        str | None, Field(description='the From header, e.g. "Shop <news@shop.example>"')
    ] = None
    smtp_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0

    # --- HTTP webhook (`polku sender webhook --channel sms|push|staff_task|offer|webhook`) ---
    webhook_url: Annotated[str | None, Field(pattern=r"^https?://")] = None
    webhook_token: Annotated[
        SecretStr | None, Field(description="sent as `Authorization: Bearer <token>`")
    ] = None
    webhook_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 10.0

    @field_validator("smtp_from")
    @classmethod
    def _an_address(cls, value: str | None) -> str | None:
        if value is not None and "@" not in parseaddr(value)[1]:
            raise ValueError("must hold an email address, e.g. 'Shop <news@shop.example>'")
        return value

    @field_validator("default_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not an IANA time zone such as Europe/Helsinki"
            ) from None
        return value

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

    def collector_keys(self) -> list[bytes]:
        """The accepted API keys; an empty list means the collector must not start."""
        if self.collector_api_keys is None:
            return []
        keys = self.collector_api_keys.get_secret_value().split(",")
        return [key.strip().encode() for key in keys if key.strip()]

    def sender_group(self, channel: ContactChannel | str) -> str:
        return self.sender_group_id or f"{self.app_id}.sender.{ContactChannel(channel).value}"

    def sender_store_path(self, channel: ContactChannel | str) -> Path:
        directory = self.sender_state_dir or self.data_dir / "senders"
        return directory / f"{self.sender_group(channel)}.sqlite3"

    def to_env(self) -> dict[str, str]:
        """These settings as POLKU_* variables, to start another process with the same config."""
        env = {}
        for name, value in self.model_dump(exclude_none=True).items():
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"POLKU_{name.upper()}"] = str(value)
        return env
