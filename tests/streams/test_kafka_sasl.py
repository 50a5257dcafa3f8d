"""SASL to the broker: each client, configured from `Settings`, speaks SCRAM to a real broker.

The bundled Tansu 0.6.0 started with `--authentication` requires SASL and offers SCRAM-SHA-256
and SCRAM-SHA-512 only. It cannot store users in this build (memory storage only, and user
creation is refused before a login), so no login can succeed here and no record is produced: a
successful SCRAM login needs an Apache Kafka with SCRAM users, which this suite does not start.

What these tests prove instead: the broker answers the exchange with `e=unknown-user`, which it
can only do after the client negotiated the SCRAM mechanism polku was configured with and sent the
configured username in its client-first message. The broker runs with frame logging, so its log
shows every request each client sent (told apart by client id): the mechanism in the handshake,
the username in the first SCRAM message, and that the password itself never went on the wire.
With PLAIN, which this broker does not offer, the handshake is refused before any credential is
sent, so the mechanism setting is what the clients use. Throughout, the password stays out of the
settings' text and out of every log record the clients write, librdkafka's security debugging
included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import KafkaError, Producer
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr

from streams import Settings, free_port, tansu_binary
from streams._kafka_security import aiokafka_security_kwargs, faust_credentials

pytestmark = pytest.mark.integration

Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
SCRAM_MECHANISMS: tuple[Mechanism, ...] = ("SCRAM-SHA-256", "SCRAM-SHA-512")

# distinctive, so that a substring search finds any leak of it, whole
PASSWORD = "test-only-sasl-pw-5c1d9e7a0b"

_START_SECONDS = 15.0  # Tansu is ready in ~20 ms; this only bounds a broken start
_STOP_SECONDS = 5.0
_CLIENT_SECONDS = 5.0  # each client fails in ~50 ms; this only bounds a hang
_POLL_SECONDS = 0.05
_LOG_SECONDS = 2.0  # the broker logs a frame before it answers it: normally no wait at all
_TICK_SECONDS = 0.02  # the pause between two looks at the port or the broker log

# warnings and errors (NoSharedMechanism), plus every request and response frame, decoded
_BROKER_LOG_FILTER = "warn,tansu_service::frame=debug"
# librdkafka's most detailed SASL logging: the password must not show even there
_LIBRDKAFKA_DEBUG = "security"
_LIBRDKAFKA_LOGGER = logging.getLogger("tests.librdkafka")

# librdkafka reports a refused mechanism as an authentication or a transport failure
_REFUSAL_CODES = {
    KafkaError._AUTHENTICATION,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
}


@dataclass(frozen=True)
class SaslBroker:
    bootstrap: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, *needles: str) -> str:
        """The broker's log once it holds every needle; the log as it is when time is up."""
        deadline = time.monotonic() + _LOG_SECONDS
        for _ in range(int(_LOG_SECONDS / _TICK_SECONDS) + 1):
            text = self.log_text()
            if all(needle in text for needle in needles) or time.monotonic() > deadline:
                return text
            time.sleep(_TICK_SECONDS)
        return self.log_text()


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    """A Tansu on 127.0.0.1 that requires SASL, with its decoded frames in a log file."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("sasl-broker") / "tansu.log"
    command = [
        str(tansu_binary()),
        "broker",
        *("--listener-url", url),
        *("--advertised-listener-url", url),
        *("--storage-engine", "memory://tansu/"),
        "--authentication",
    ]
    # NO_COLOR: plain text in the log file, so that the needles below match it
    environment = os.environ | {"RUST_LOG": _BROKER_LOG_FILTER, "NO_COLOR": "1"}
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=environment
        )
    try:
        _wait_until_listening(process, port, log)
        yield SaslBroker(f"127.0.0.1:{port}", log)
    finally:
        _stop(process)


def _wait_until_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + _START_SECONDS
    for _ in range(int(_START_SECONDS / _TICK_SECONDS) + 1):
        assert process.poll() is None, f"tansu exited: {log.read_text(errors='replace')}"
        if _accepts(port):
            return
        assert time.monotonic() < deadline, "tansu did not accept connections in time"
        time.sleep(_TICK_SECONDS)
    pytest.fail("tansu did not accept connections in time")


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(_STOP_SECONDS)


def _settings(bootstrap: str, mechanism: Mechanism, username: str) -> Settings:
    return Settings(
        kafka_bootstrap=bootstrap,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username=username,
        kafka_sasl_password=SecretStr(PASSWORD),
    )


# how Tansu 0.6.0 logs the bodies of the two SASL requests
_HANDSHAKE = "SaslHandshakeRequest(SaslHandshakeRequest { mechanism: "
_AUTHENTICATE = "SaslAuthenticateRequest(SaslAuthenticateRequest { auth_bytes: b"


def _request(client_id: str, body: str) -> str:
    """How Tansu logs a request frame of `client_id` whose body starts with `body`."""
    return f'client_id: Some("{client_id}") }}, body: {body}'


def _scram_requests(client_id: str, mechanism: Mechanism, username: str) -> tuple[str, ...]:
    """The client's SCRAM messages as the broker logs them (RFC 5802, no channel binding)."""
    return (
        _request(client_id, f'{_HANDSHAKE}"{mechanism}"'),
        # client-first: the username, in the clear, as SCRAM has it
        _request(client_id, f'{_AUTHENTICATE}"n,,n={username},r='),
        # client-final: sent only after the broker's server-first message, so a full round
        _request(client_id, f'{_AUTHENTICATE}"c=biws,r='),
    )


def _assert_all_in(needles: tuple[str, ...], text: str) -> None:
    missing = [needle for needle in needles if needle not in text]
    assert not missing, f"not in the broker's log: {missing}"


# --- confluent-kafka (librdkafka): the producer, collector, senders and topic admin -----------


def _confluent_errors(settings: Settings, client_id: str) -> list[KafkaError]:
    """The errors a producer built from the settings reports until authentication fails."""
    errors: list[KafkaError] = []
    # only the connection's identity and reporting are added: every security key is the settings'
    config = settings.kafka_client_config() | {
        "client.id": client_id,
        "error_cb": errors.append,
        "logger": _LIBRDKAFKA_LOGGER,
        "debug": _LIBRDKAFKA_DEBUG,
    }
    producer = Producer(config)
    deadline = time.monotonic() + _CLIENT_SECONDS
    for _ in range(int(_CLIENT_SECONDS / _POLL_SECONDS) + 1):
        if _authentication_errors(errors) or time.monotonic() > deadline:
            break
        # polling serves the error callback and the logger
        producer.poll(_POLL_SECONDS)
    return errors


def _authentication_errors(errors: list[KafkaError]) -> list[KafkaError]:
    return [error for error in errors if error.code() == KafkaError._AUTHENTICATION]


@pytest.mark.parametrize("mechanism", SCRAM_MECHANISMS)
def test_confluent_runs_the_configured_scram_exchange(
    sasl_broker: SaslBroker, mechanism: Mechanism, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client_id, username = f"confluent-{mechanism}", f"user-confluent-{mechanism}"
    settings = _settings(sasl_broker.bootstrap, mechanism, username)

    failures = _authentication_errors(_confluent_errors(settings, client_id))

    assert failures, "librdkafka reported no authentication error"
    text = failures[0].str()
    assert "SASL SCRAM authentication failed" in text
    assert "unknown-user" in text
    needles = _scram_requests(client_id, mechanism, username)
    log = sasl_broker.wait_for_log(*needles)
    _assert_all_in(needles, log)
    # SCRAM sends a proof, never the password; nor does librdkafka log it, even when debugging
    assert PASSWORD not in log
    assert caplog.records, "librdkafka's log did not reach Python logging"
    assert PASSWORD not in caplog.text


def test_confluent_with_plain_is_refused_before_sending_the_password(
    sasl_broker: SaslBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client_id = "confluent-PLAIN"
    settings = _settings(sasl_broker.bootstrap, "PLAIN", "user-confluent-PLAIN")

    errors = _confluent_errors(settings, client_id)

    assert errors, "librdkafka reported no error"
    assert {error.code() for error in errors} <= _REFUSAL_CODES, [e.str() for e in errors]
    assert not any("SCRAM" in error.str() for error in errors)
    handshake = _request(client_id, f'{_HANDSHAKE}"PLAIN"')
    log = sasl_broker.wait_for_log(handshake)
    assert handshake in log
    # the broker closed the connection at the handshake: PLAIN's password was never sent
    assert _request(client_id, _AUTHENTICATE) not in log
    assert PASSWORD not in log
    assert PASSWORD not in caplog.text


# --- aiokafka, directly and through Faust ------------------------------------------------------


def _aiokafka_kwargs(settings: Settings, source: str) -> dict[str, Any]:
    if source == "faust":
        # what Faust's aiokafka driver makes of `broker_credentials`
        return dict(credentials_to_aiokafka_auth(faust_credentials(settings)))
    return aiokafka_security_kwargs(settings)


async def _start_failure(producer: AIOKafkaProducer) -> Exception:
    """What `start()` raised; a test failure if it hung or succeeded."""
    try:
        async with asyncio.timeout(_CLIENT_SECONDS):
            await producer.start()
    except TimeoutError:
        pytest.fail(f"aiokafka neither connected nor failed in {_CLIENT_SECONDS} s")
    except Exception as exc:
        return exc
    finally:
        # also after a failed start: an unclosed producer warns, and warnings are errors here
        await producer.stop()
    pytest.fail("aiokafka logged in, which this broker cannot allow")


@pytest.mark.asyncio
@pytest.mark.parametrize("mechanism", SCRAM_MECHANISMS)
@pytest.mark.parametrize("source", ["polku", "faust"])
async def test_aiokafka_runs_the_configured_scram_exchange(
    sasl_broker: SaslBroker, mechanism: Mechanism, source: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client_id, username = f"aiokafka-{source}-{mechanism}", f"user-aiokafka-{source}-{mechanism}"
    settings = _settings(sasl_broker.bootstrap, mechanism, username)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.require_bootstrap(),
        client_id=client_id,
        **_aiokafka_kwargs(settings, source),
    )

    # Any exception will do: aiokafka 0.14 expects the broker's server-final message to carry
    # `v=` and raises a bare KeyError('v') on the `e=unknown-user` reply instead of an
    # authentication error. The broker's log below is what shows the exchange took place.
    failure = await _start_failure(producer)

    needles = _scram_requests(client_id, mechanism, username)
    log = await asyncio.to_thread(sasl_broker.wait_for_log, *needles)
    _assert_all_in(needles, log)
    assert PASSWORD not in log
    assert PASSWORD not in repr(failure)
    assert PASSWORD not in caplog.text


# --- the settings themselves -------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", SCRAM_MECHANISMS)
def test_the_password_never_shows_in_the_settings_text(mechanism: Mechanism) -> None:
    settings = _settings("127.0.0.1:9092", mechanism, "alice")

    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert PASSWORD not in shown
    # pydantic masks a SecretStr in JSON: the field is there, its value is not
    assert '"kafka_sasl_password":"**********"' in settings.model_dump_json()
    assert PASSWORD not in repr(faust_credentials(settings))
    # not vacuous: the clients' configs do carry it
    assert settings.kafka_client_config()["sasl.password"] == PASSWORD
    assert aiokafka_security_kwargs(settings)["sasl_plain_password"] == PASSWORD
