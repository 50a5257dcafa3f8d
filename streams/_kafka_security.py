"""TLS and SASL for aiokafka and Faust, from the same POLKU_KAFKA_* settings as confluent-kafka.

librdkafka (confluent-kafka: producer, collector, senders, topic admin) reads the certificate
files itself, so its mapping is `Settings.kafka_client_config`. aiokafka, and Faust on top of
it, take an `ssl.SSLContext`: it is built here, so that `_settings` stays free of client
libraries and every aiokafka-based client gets the same context.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import faust
from aiokafka.helpers import create_ssl_context

from streams._errors import ConfigError
from streams._settings import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The client TLS context for SSL and SASL_SSL, None for the plaintext protocols.

    It verifies the broker against `kafka_ssl_cafile` (or the system store), presents the client
    certificate when one is configured, and checks the host name unless that is turned off.
    """
    if not settings.kafka_uses_tls:
        return None
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
            password=_key_password(settings),
        )
    except ssl.SSLError as exc:
        # OpenSSL says only "PEM lib" for both a file that is not PEM and a wrong passphrase
        reason = exc.reason or "not PEM, or not the key's POLKU_KAFKA_SSL_KEY_PASSWORD"
        message = f"cannot load the Kafka TLS files ({_files(settings)}): {reason}"
        raise ConfigError(message) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the Kafka TLS files ({_files(settings)}): {exc}") from None
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def faust_credentials(settings: Settings) -> faust.SSLCredentials | faust.SASLCredentials | None:
    """`broker_credentials` for `faust.App`: SASL (over TLS for SASL_SSL), TLS alone, or none."""
    context = ssl_context(settings)
    if settings.kafka_uses_sasl:
        # with a context Faust speaks SASL_SSL, without one SASL_PLAINTEXT
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username or "",
            password=_sasl_password(settings),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def aiokafka_security_kwargs(settings: Settings) -> dict[str, Any]:
    """The security keyword arguments of an `AIOKafkaConsumer`/`AIOKafkaProducer`."""
    kwargs: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if settings.kafka_uses_sasl:
        kwargs |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username or "",
            "sasl_plain_password": _sasl_password(settings),
        }
    return kwargs


def _sasl_password(settings: Settings) -> str:
    password = settings.kafka_sasl_password
    return password.get_secret_value() if password else ""


def _key_password(settings: Settings) -> str | Callable[[], str]:
    password = settings.kafka_ssl_key_password
    if password is not None:
        return password.get_secret_value()

    def no_password() -> str:
        # without a callback OpenSSL would prompt on the terminal: a worker would hang silently
        raise ConfigError(
            f"{settings.kafka_ssl_keyfile} is encrypted: set POLKU_KAFKA_SSL_KEY_PASSWORD"
        )

    return no_password


def _files(settings: Settings) -> str:
    files = {
        "POLKU_KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
        "POLKU_KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
        "POLKU_KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile,
    }
    return ", ".join(f"{name}={path}" for name, path in files.items() if path) or "system CA store"
