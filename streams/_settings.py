"""The one configuration object: built once at start from POLKU_* variables, then passed down."""

from __future__ import annotations

import json
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    NonNegativeInt,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas import ContactChannel
from streams._errors import ConfigError


class Settings(BaseSettings):
    # a cross-field error would print every input, passwords included: errors name, never quote
    model_config = SettingsConfigDict(
        env_prefix="POLKU_", frozen=True, extra="forbid", hide_input_in_errors=True
    )

    kafka_bootstrap: Annotated[
        str | None,
        Field(description="host:port[,host:port]; unset means the demo starts a local broker"),
    ] = None
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Annotated[
        Path | None,
        Field(description="CA bundle (PEM) that signed the brokers' certificates; unset = system"),
    ] = None
    kafka_ssl_certfile: Annotated[
        Path | None,
        Field(description="client certificate chain (PEM) for mutual TLS; with kafka_ssl_keyfile"),
    ] = None
    kafka_ssl_keyfile: Annotated[
        Path | None, Field(description="the client certificate's private key (PEM)")
    ] = None
    kafka_ssl_key_password: Annotated[
        SecretStr | None, Field(description="passphrase of an encrypted kafka_ssl_keyfile")
    ] = None
    kafka_ssl_check_hostname: Annotated[
        bool, Field(description="the broker's certificate must name the host polku dialled")
    ] = True

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
    batch_max_events: Annotated[
        int,
        Field(
            ge=1,
            le=100_000,
            description="most records the worker processes per broker round trip; a batch is "
            "what is queued when the worker is ready, so an idle worker takes one at once",
        ),
    ] = 1000
    timer_batch_max: Annotated[
        int,
        Field(
            ge=1,
            le=100_000,
            description="most due timers an idle worker fires in one batch; a batch's actions "
            "are all sent before its states are saved (once the actions are acked), so a "
            "burst's last action goes out sooner in fewer, larger batches (between input "
            "batches it fires at most `batch_max_events`, so that input is not held up)",
        ),
    ] = 10_000
    producer_linger_seconds: Annotated[
        float,
        Field(
            ge=0,
            le=1,
            description="how long the worker's producer gathers records while the worker works "
            "through a backlog (full batches); a batch that took all that was queued is sent "
            "at once when it is done",
        ),
    ] = 0.05
    fetch_max_wait_ms: Annotated[
        int, Field(ge=1, le=10_000, description="longest wait of the worker's consumer in a fetch")
    ] = 50
    fetch_prefetch_backoff_ms: Annotated[
        int,
        Field(
            ge=0,
            le=10_000,
            description="longest the worker's consumer holds its next fetch back while records "
            "it fetched are not yet taken (aiokafka's 100; the changelogs' records that caused "
            "B2's stalls at a worker's start are no longer fetched)",
        ),
    ] = 100
    max_poll_records: Annotated[
        int | None, Field(ge=1, description="records per consumer fetch; unset = client default")
    ] = None
    table_write_buffer_bytes: Annotated[
        int,
        Field(
            ge=1024 * 1024,
            description="RocksDB memtable size per table partition (two are kept); Faust's "
            "default of 3 x 64 MiB for each of 3 tables x partitions held a whole run's state",
        ),
    ] = 8 * 1024 * 1024
    table_block_cache_bytes: Annotated[
        int,
        Field(ge=1024 * 1024, description="RocksDB read cache per table partition"),
    ] = 16 * 1024 * 1024
    state_cache_customers: Annotated[
        int,
        Field(
            ge=0,
            description="journey states the worker keeps decoded, the most recently used "
            "customers' (0: decode every state it reads)",
        ),
    ] = 10_000
    timer_warm_seconds: Annotated[
        float,
        Field(
            ge=0,
            le=3600,
            description="how far ahead an idle worker works out the firing of the timers about "
            "to fall due (as of their due time), so that a burst of them fires faster (0: never)",
        ),
    ] = 10.0
    timer_on_time_seconds: Annotated[
        float,
        Field(
            ge=0,
            le=300,
            description="a timer fired no later than this after its due time is processed as "
            "of its due time, so its outcome does not depend on the worker's delay (and an idle "
            "worker can work it out ahead); a later one as of when it fires",
        ),
    ] = 10.0
    gc_thresholds: Annotated[
        tuple[NonNegativeInt, NonNegativeInt, NonNegativeInt],
        Field(
            description="the worker's `gc.set_threshold`; Python's (700, 10, 10) made full "
            "collections over the kept states a quarter of its time (JSON list in the env)",
        ),
    ] = (50_000, 20, 50)
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
    collector_body_timeout_seconds: Annotated[
        float,
        Field(gt=0, le=300, description="how long a client may take to send a body before 408"),
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

    @field_validator("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
    @classmethod
    def _an_existing_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # checked at start: librdkafka and ssl would otherwise fail later, on first connect
        if value is not None and not value.is_file():
            raise ValueError(f"POLKU_{str(info.field_name).upper()}: no such file: {value}")
        return value

    @model_validator(mode="after")
    def _kafka_security_fits_the_protocol(self) -> Settings:
        problem = _tls_problem(self) or _sasl_problem(self)
        if problem:
            raise ValueError(problem)
        return self

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

    @property
    def kafka_uses_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    @property
    def kafka_uses_sasl(self) -> bool:
        return self.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def kafka_client_config(self) -> dict[str, str | int | float | bool]:
        """librdkafka (confluent-kafka) settings for this deployment's broker.

        aiokafka and Faust take an `ssl.SSLContext` instead: `streams._kafka_security`.
        """
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.require_bootstrap(),
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_uses_sasl:
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
            config["sasl.username"] = self.kafka_sasl_username or ""
            password = self.kafka_sasl_password
            config["sasl.password"] = password.get_secret_value() if password else ""
        if self.kafka_uses_tls:
            config |= self._librdkafka_tls()
        return config

    def _librdkafka_tls(self) -> dict[str, str | int | float | bool]:
        config: dict[str, str | int | float | bool] = {
            "ssl.endpoint.identification.algorithm": (
                "https" if self.kafka_ssl_check_hostname else "none"
            ),
        }
        if self.kafka_ssl_cafile is not None:
            config["ssl.ca.location"] = str(self.kafka_ssl_cafile)
        if self.kafka_ssl_certfile is not None and self.kafka_ssl_keyfile is not None:
            config["ssl.certificate.location"] = str(self.kafka_ssl_certfile)
            config["ssl.key.location"] = str(self.kafka_ssl_keyfile)
        if self.kafka_ssl_key_password is not None:
            config["ssl.key.password"] = self.kafka_ssl_key_password.get_secret_value()
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
            elif isinstance(value, tuple | list | dict):
                value = json.dumps(value)  # how pydantic-settings reads complex fields
            env[f"POLKU_{name.upper()}"] = str(value)
        return env


def _tls_problem(settings: Settings) -> str | None:
    if (settings.kafka_ssl_certfile is None) != (settings.kafka_ssl_keyfile is None):
        return "give POLKU_KAFKA_SSL_CERTFILE and POLKU_KAFKA_SSL_KEYFILE together (mutual TLS)"
    if settings.kafka_ssl_key_password is not None and settings.kafka_ssl_keyfile is None:
        return "POLKU_KAFKA_SSL_KEY_PASSWORD is set but POLKU_KAFKA_SSL_KEYFILE is not"
    tls_given = [
        name
        for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
        if getattr(settings, name) is not None
    ]
    if not settings.kafka_ssl_check_hostname:
        tls_given.append("kafka_ssl_check_hostname")
    if tls_given and not settings.kafka_uses_tls:
        # a plaintext connection would silently ignore them: no encryption the operator asked for
        names = ", ".join(f"POLKU_{name.upper()}" for name in tls_given)
        return (
            f"{names} need POLKU_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL "
            f"(it is {settings.kafka_security_protocol})"
        )
    return None


def _sasl_problem(settings: Settings) -> str | None:
    username, password = settings.kafka_sasl_username, settings.kafka_sasl_password
    if settings.kafka_uses_sasl and (username is None or password is None):
        # PLAIN and SCRAM both need the pair; the broker's refusal would come only at connect
        return (
            f"POLKU_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} needs "
            "POLKU_KAFKA_SASL_USERNAME and POLKU_KAFKA_SASL_PASSWORD"
        )
    if not settings.kafka_uses_sasl and (username is not None or password is not None):
        return (
            "POLKU_KAFKA_SASL_USERNAME/PASSWORD need POLKU_KAFKA_SECURITY_PROTOCOL=SASL_SSL "
            f"or SASL_PLAINTEXT (it is {settings.kafka_security_protocol})"
        )
    return None
