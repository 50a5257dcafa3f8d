"""TLS to the broker: settings, the three clients' configs, and real mutual-TLS handshakes.

The certificates are made per test session with the `openssl` CLI (the venv has no
`cryptography`): a CA, a broker certificate for 127.0.0.1, one for another host, a client
certificate with an encrypted key, and an unrelated CA that must not be trusted.

The bundled Tansu cannot listen on TLS (its `--cert` and `--key` flags exclude each other), so
the end-to-end test puts a mutual-TLS terminating proxy in front of a Tansu that advertises the
proxy: every Kafka request of every client then travels over TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer
from confluent_kafka import TopicPartition as ConfluentPartition
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr, ValidationError

from streams import ConfigError, Settings, ensure_topics, free_port, tansu_binary
from streams._faust_fixes import aiokafka_client_config, fetch_highwaters
from streams._kafka_security import aiokafka_security_kwargs, faust_credentials, ssl_context

KEY_PASSWORD = "test-only-key-passphrase"
SASL_PASSWORD = "test-only-sasl-password"
CLIENT_NAME = "polku-client"


@dataclass(frozen=True)
class Pki:
    ca: Path
    other_ca: Path
    broker_cert: Path
    broker_key: Path
    misnamed_cert: Path
    misnamed_key: Path
    client_cert: Path
    client_key: Path  # encrypted with KEY_PASSWORD


_serials = itertools.count(1000)


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


def _make_ca(directory: Path, name: str) -> None:
    _openssl(
        directory,
        *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
        *("-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}"),
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
    )


def _make_leaf(
    directory: Path, name: str, *, usage: str, names: str, passphrase: str | None = None
) -> None:
    encrypt = ("-aes-256-cbc", "-pass", f"pass:{passphrase}") if passphrase else ()
    unlock = ("-passin", f"pass:{passphrase}") if passphrase else ()
    _openssl(
        directory,
        *("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", *encrypt),
        *("-out", f"{name}.key"),
    )
    _openssl(
        directory,
        *("req", "-new", "-key", f"{name}.key", *unlock, "-subj", f"/CN={name}"),
        *("-out", f"{name}.csr"),
    )
    (directory / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage={usage}\n"
        f"subjectAltName={names}\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _openssl(
        directory,
        *("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key"),
        *("-set_serial", str(next(_serials)), "-days", "2", "-extfile", f"{name}.ext"),
        *("-out", f"{name}.pem"),
    )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    _make_ca(directory, "ca")
    _make_ca(directory, "other-ca")
    _make_leaf(directory, "broker", usage="serverAuth", names="IP:127.0.0.1,DNS:localhost")
    _make_leaf(directory, "misnamed", usage="serverAuth", names="DNS:kafka.invalid")
    _make_leaf(
        directory, CLIENT_NAME, usage="clientAuth", names="DNS:polku", passphrase=KEY_PASSWORD
    )
    return Pki(
        ca=directory / "ca.pem",
        other_ca=directory / "other-ca.pem",
        broker_cert=directory / "broker.pem",
        broker_key=directory / "broker.key",
        misnamed_cert=directory / "misnamed.pem",
        misnamed_key=directory / "misnamed.key",
        client_cert=directory / f"{CLIENT_NAME}.pem",
        client_key=directory / f"{CLIENT_NAME}.key",
    )


def _mtls_settings(pki: Pki, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap": "127.0.0.1:9093",
        "kafka_security_protocol": "SSL",
        "kafka_ssl_cafile": pki.ca,
        "kafka_ssl_certfile": pki.client_cert,
        "kafka_ssl_keyfile": pki.client_key,
        "kafka_ssl_key_password": SecretStr(KEY_PASSWORD),
    }
    return Settings(**(values | overrides))


def _broker_context(certfile: Path, keyfile: Path, ca: Path) -> ssl.SSLContext:
    """A broker's side of mutual TLS: its own certificate, and client certificates required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(certfile, keyfile)
    return context


def _common_name(certificate: Any) -> str:
    for rdn in certificate["subject"] if certificate else ():
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


@contextlib.asynccontextmanager
async def _greeter(pki: Pki, *, misnamed: bool = False) -> AsyncIterator[int]:
    """A TLS server on 127.0.0.1 that greets each client by its certificate's name; its port."""
    cert, key = (
        (pki.misnamed_cert, pki.misnamed_key) if misnamed else (pki.broker_cert, pki.broker_key)
    )
    context = _broker_context(cert, key, pki.ca)

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        name = _common_name(writer.get_extra_info("peercert"))
        writer.write(f"hello {name}\n".encode())
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.drain()
            writer.close()
            await writer.wait_closed()

    server = await asyncio.start_server(greet, "127.0.0.1", 0, ssl=context)
    async with server:
        yield int(server.sockets[0].getsockname()[1])


async def _greeting(context: ssl.SSLContext | None, port: int) -> str:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"), 5
    )
    try:
        return (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


# --- real handshakes --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_settings_context_completes_a_mutual_tls_handshake(pki: Pki) -> None:
    async with _greeter(pki) as port:
        assert await _greeting(ssl_context(_mtls_settings(pki)), port) == f"hello {CLIENT_NAME}"


@pytest.mark.asyncio
async def test_a_broker_certified_by_another_ca_is_refused(pki: Pki) -> None:
    context = ssl_context(_mtls_settings(pki, kafka_ssl_cafile=pki.other_ca))
    async with _greeter(pki) as port:
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            await _greeting(context, port)


@pytest.mark.asyncio
async def test_without_a_client_certificate_the_broker_lets_nothing_through(pki: Pki) -> None:
    context = ssl_context(
        _mtls_settings(
            pki, kafka_ssl_certfile=None, kafka_ssl_keyfile=None, kafka_ssl_key_password=None
        )
    )
    async with _greeter(pki) as port:
        # TLS 1.3: the broker refuses after the client's last handshake message, so the refusal
        # arrives on the first read, as an alert or as a closed connection
        try:
            greeting = await _greeting(context, port)
        except (ssl.SSLError, ConnectionError):
            return
        assert greeting == ""


@pytest.mark.asyncio
async def test_the_host_name_is_checked_unless_turned_off(pki: Pki) -> None:
    async with _greeter(pki, misnamed=True) as port:
        with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
            await _greeting(ssl_context(_mtls_settings(pki)), port)
        unchecked = ssl_context(_mtls_settings(pki, kafka_ssl_check_hostname=False))
        assert unchecked is not None
        assert unchecked.verify_mode == ssl.CERT_REQUIRED  # the chain is still verified
        assert await _greeting(unchecked, port) == f"hello {CLIENT_NAME}"


def test_a_wrong_key_password_is_a_config_error_without_the_password(pki: Pki) -> None:
    settings = _mtls_settings(pki, kafka_ssl_key_password=SecretStr("not-the-passphrase"))
    with pytest.raises(ConfigError, match="POLKU_KAFKA_SSL_KEY_PASSWORD") as raised:
        ssl_context(settings)
    assert str(pki.client_key) in str(raised.value)
    assert "not-the-passphrase" not in str(raised.value)


def test_an_encrypted_key_without_a_password_fails_instead_of_prompting(pki: Pki) -> None:
    settings = _mtls_settings(pki, kafka_ssl_key_password=None)
    with pytest.raises(ConfigError, match="is encrypted: set POLKU_KAFKA_SSL_KEY_PASSWORD"):
        ssl_context(settings)


def test_a_file_that_is_not_pem_is_a_config_error(pki: Pki, tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"POLKU_KAFKA_SSL_CAFILE=.*NO_CERTIFICATE"):
        ssl_context(_mtls_settings(pki, kafka_ssl_cafile=garbage))


# --- the three clients' configurations -------------------------------------------------------


def test_confluent_gets_the_file_locations_and_the_key_password(pki: Pki) -> None:
    config = _mtls_settings(pki).kafka_client_config()
    assert config == {
        "bootstrap.servers": "127.0.0.1:9093",
        "security.protocol": "SSL",
        "ssl.ca.location": str(pki.ca),
        "ssl.certificate.location": str(pki.client_cert),
        "ssl.key.location": str(pki.client_key),
        "ssl.key.password": KEY_PASSWORD,
        "ssl.endpoint.identification.algorithm": "https",
    }


def test_confluent_with_sasl_over_tls_and_no_hostname_check(pki: Pki) -> None:
    settings = Settings(
        kafka_bootstrap="k:1",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="polku",
        kafka_sasl_password=SecretStr(SASL_PASSWORD),
        kafka_ssl_cafile=pki.ca,
        kafka_ssl_check_hostname=False,
    )
    assert settings.kafka_client_config() == {
        "bootstrap.servers": "k:1",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "polku",
        "sasl.password": SASL_PASSWORD,
        "ssl.ca.location": str(pki.ca),
        "ssl.endpoint.identification.algorithm": "none",
    }


def test_plaintext_configs_have_no_tls() -> None:
    settings = Settings(kafka_bootstrap="k:1")
    assert settings.kafka_client_config() == {
        "bootstrap.servers": "k:1",
        "security.protocol": "PLAINTEXT",
    }
    assert aiokafka_security_kwargs(settings) == {"security_protocol": "PLAINTEXT"}
    assert ssl_context(settings) is None
    assert faust_credentials(settings) is None


def test_tls_without_a_ca_file_trusts_the_system_store() -> None:
    settings = Settings(kafka_bootstrap="k:1", kafka_security_protocol="SSL")
    context = ssl_context(settings)
    assert context is not None
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert settings.kafka_client_config() == {
        "bootstrap.servers": "k:1",
        "security.protocol": "SSL",
        "ssl.endpoint.identification.algorithm": "https",
    }


def test_aiokafka_kwargs_for_mutual_tls(pki: Pki) -> None:
    kwargs = aiokafka_security_kwargs(_mtls_settings(pki))
    assert set(kwargs) == {"security_protocol", "ssl_context"}
    assert kwargs["security_protocol"] == "SSL"
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_aiokafka_kwargs_for_sasl_over_tls(pki: Pki) -> None:
    settings = _sasl_settings(pki, "SASL_SSL")
    kwargs = aiokafka_security_kwargs(settings)
    assert isinstance(kwargs.pop("ssl_context"), ssl.SSLContext)
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "polku",
        "sasl_plain_password": SASL_PASSWORD,
    }
    assert aiokafka_client_config(settings)["bootstrap_servers"] == ["k:1", "k:2"]
    assert aiokafka_client_config(settings)["security_protocol"] == "SASL_SSL"


def test_aiokafka_kwargs_for_sasl_without_tls(pki: Pki) -> None:
    kwargs = aiokafka_security_kwargs(_sasl_settings(pki, "SASL_PLAINTEXT"))
    assert "ssl_context" not in kwargs
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT"
    assert kwargs["sasl_plain_password"] == SASL_PASSWORD


def _sasl_settings(pki: Pki, protocol: str) -> Settings:
    tls = {"kafka_ssl_cafile": pki.ca} if protocol == "SASL_SSL" else {}
    return Settings(
        kafka_bootstrap="k:1,k:2",
        kafka_security_protocol=protocol,
        kafka_sasl_username="polku",
        kafka_sasl_password=SecretStr(SASL_PASSWORD),
        **tls,  # type: ignore[arg-type]
    )


def test_faust_gets_tls_credentials_it_maps_to_ssl(pki: Pki) -> None:
    credentials = faust_credentials(_mtls_settings(pki))
    assert isinstance(credentials, faust.SSLCredentials)
    auth = credentials_to_aiokafka_auth(credentials)
    assert auth["security_protocol"] == "SSL"
    assert auth["ssl_context"] is credentials.context


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
def test_faust_gets_sasl_credentials_with_tls_only_for_sasl_ssl(pki: Pki, protocol: str) -> None:
    credentials = faust_credentials(_sasl_settings(pki, protocol))
    assert isinstance(credentials, faust.SASLCredentials)
    auth = credentials_to_aiokafka_auth(credentials)
    assert auth["security_protocol"] == protocol
    assert auth["sasl_plain_password"] == SASL_PASSWORD
    assert (auth["ssl_context"] is not None) is (protocol == "SASL_SSL")
    assert SASL_PASSWORD not in repr(credentials)


# --- validation and secrecy ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kafka_ssl_keyfile": None}, "POLKU_KAFKA_SSL_CERTFILE and POLKU_KAFKA_SSL_KEYFILE"),
        ({"kafka_ssl_certfile": None}, "POLKU_KAFKA_SSL_CERTFILE and POLKU_KAFKA_SSL_KEYFILE"),
        (
            {"kafka_ssl_certfile": None, "kafka_ssl_keyfile": None},
            "POLKU_KAFKA_SSL_KEY_PASSWORD is set but POLKU_KAFKA_SSL_KEYFILE is not",
        ),
        (
            {"kafka_security_protocol": "PLAINTEXT"},
            "POLKU_KAFKA_SSL_CAFILE, POLKU_KAFKA_SSL_CERTFILE, POLKU_KAFKA_SSL_KEYFILE need "
            "POLKU_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL \\(it is PLAINTEXT\\)",
        ),
        (
            {"kafka_security_protocol": "SASL_SSL"},
            "SASL_SSL needs POLKU_KAFKA_SASL_USERNAME and POLKU_KAFKA_SASL_PASSWORD",
        ),
        (
            {"kafka_sasl_username": "polku", "kafka_sasl_password": SecretStr(SASL_PASSWORD)},
            "POLKU_KAFKA_SASL_USERNAME/PASSWORD need POLKU_KAFKA_SECURITY_PROTOCOL=SASL_SSL",
        ),
    ],
)
def test_settings_that_cannot_work_together_are_refused(
    pki: Pki, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as raised:
        _mtls_settings(pki, **overrides)
    assert KEY_PASSWORD not in str(raised.value)
    assert SASL_PASSWORD not in str(raised.value)


def test_turning_off_the_hostname_check_needs_tls() -> None:
    with pytest.raises(ValidationError, match="POLKU_KAFKA_SSL_CHECK_HOSTNAME need"):
        Settings(
            kafka_bootstrap="k:1",
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_username="polku",
            kafka_sasl_password=SecretStr(SASL_PASSWORD),
            kafka_ssl_check_hostname=False,
        )


@pytest.mark.parametrize("name", ["kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"])
def test_a_missing_file_is_named_by_its_setting(pki: Pki, tmp_path: Path, name: str) -> None:
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(ValidationError, match=f"POLKU_{name.upper()}: no such file: {missing}"):
        _mtls_settings(pki, **{name: missing})


def test_a_directory_is_not_a_ca_file(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="POLKU_KAFKA_SSL_CAFILE: no such file"):
        _mtls_settings(pki, kafka_ssl_cafile=tmp_path)


def test_the_settings_come_from_the_environment(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLKU_KAFKA_BOOTSTRAP", "k:1")
    monkeypatch.setenv("POLKU_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("POLKU_KAFKA_SSL_CAFILE", str(pki.ca))
    monkeypatch.setenv("POLKU_KAFKA_SSL_CERTFILE", str(pki.client_cert))
    monkeypatch.setenv("POLKU_KAFKA_SSL_KEYFILE", str(pki.client_key))
    monkeypatch.setenv("POLKU_KAFKA_SSL_KEY_PASSWORD", KEY_PASSWORD)
    monkeypatch.setenv("POLKU_KAFKA_SSL_CHECK_HOSTNAME", "false")
    settings = Settings()
    assert settings == _mtls_settings(pki, kafka_bootstrap="k:1", kafka_ssl_check_hostname=False)


def test_to_env_round_trips_the_tls_settings(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    original = _mtls_settings(pki, kafka_ssl_check_hostname=False)
    for key, value in original.to_env().items():
        monkeypatch.setenv(key, value)
    assert Settings() == original


def test_passwords_never_show_in_repr_or_str(pki: Pki) -> None:
    settings = Settings(
        kafka_bootstrap="k:1",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="polku",
        kafka_sasl_password=SecretStr(SASL_PASSWORD),
        kafka_ssl_cafile=pki.ca,
        kafka_ssl_certfile=pki.client_cert,
        kafka_ssl_keyfile=pki.client_key,
        kafka_ssl_key_password=SecretStr(KEY_PASSWORD),
    )
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert KEY_PASSWORD not in shown
        assert SASL_PASSWORD not in shown
    assert settings.kafka_client_config()["ssl.key.password"] == KEY_PASSWORD


def test_a_password_given_as_plain_text_is_not_echoed_in_errors(pki: Pki) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(
            kafka_bootstrap="k:1",
            kafka_security_protocol="SSL",
            kafka_ssl_key_password=KEY_PASSWORD,
        )
    assert KEY_PASSWORD not in str(raised.value)


# --- end to end: both client libraries through mutual TLS to a real broker --------------------


class _TlsProxy:
    """Terminates mutual TLS on 127.0.0.1 and relays the bytes to a plaintext broker.

    It runs its own event loop in a thread: confluent-kafka's calls block the caller's loop.
    """

    def __init__(self, context: ssl.SSLContext, upstream_port: int, port: int) -> None:
        self._context = context
        self._upstream_port = upstream_port
        self.port = port
        self.clients: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> _TlsProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._relay, "127.0.0.1", self.port, ssl=self._context)

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        # closing every connection ends both pipes of each relay with an end of stream
        for writer in list(self._writers):
            writer.close()
        if self._relays:
            await asyncio.wait(self._relays, timeout=5)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        self.clients.append(_common_name(writer.get_extra_info("peercert")))
        writers = [writer]
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
            writers.append(up_writer)
            self._writers.add(up_writer)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._relays.discard(task)
            for each in writers:
                self._writers.discard(each)
                each.close()
                with contextlib.suppress(ConnectionError, ssl.SSLError):
                    await each.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
        writer.close()


@contextlib.contextmanager
def _tansu_behind(advertised_port: int, log: Path) -> Iterator[int]:
    """A Tansu that listens on a plaintext port but tells clients to use `advertised_port`."""
    port = free_port()
    command = [
        str(tansu_binary()),
        "broker",
        *("--listener-url", f"tcp://127.0.0.1:{port}"),
        *("--advertised-listener-url", f"tcp://127.0.0.1:{advertised_port}"),
        *("--storage-engine", "memory://tansu/"),
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while not _accepts(port):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "tansu did not start"
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


@pytest.fixture
def tls_broker(pki: Pki, tmp_path: Path) -> Iterator[tuple[Settings, _TlsProxy]]:
    proxy_port = free_port()
    context = _broker_context(pki.broker_cert, pki.broker_key, pki.ca)
    with (
        _tansu_behind(proxy_port, tmp_path / "tansu.log") as upstream,
        _TlsProxy(context, upstream, proxy_port) as proxy,
    ):
        # one partition: both clients' records in one order, whatever their partitioners
        settings = _mtls_settings(pki, kafka_bootstrap=f"127.0.0.1:{proxy_port}", partitions=1)
        yield settings, proxy


@pytest.mark.integration
@pytest.mark.asyncio
async def test_confluent_and_aiokafka_produce_and_consume_over_mutual_tls(
    tls_broker: tuple[Settings, _TlsProxy],
) -> None:
    settings, proxy = tls_broker
    topic = f"tls-{uuid.uuid4().hex[:8]}"
    ensure_topics(settings, [topic])

    _confluent_produce(settings, topic, b"from confluent")
    aio_producer = AIOKafkaProducer(
        bootstrap_servers=settings.require_bootstrap(), **aiokafka_security_kwargs(settings)
    )
    await aio_producer.start()
    try:
        await aio_producer.send_and_wait(topic, b"from aiokafka", key=b"k")
    finally:
        await aio_producer.stop()

    assert await _aiokafka_values(settings, topic, 2) == [b"from confluent", b"from aiokafka"]
    assert _confluent_values(settings, topic, 2) == [b"from confluent", b"from aiokafka"]
    # the Faust recovery fix's own client, built by aiokafka_client_config, over TLS too
    highwaters = await fetch_highwaters(
        aiokafka_client_config(settings), {TopicPartition(topic, 0): 1}
    )
    assert highwaters[TopicPartition(topic, 0)] == 2
    assert proxy.clients
    assert set(proxy.clients) == {CLIENT_NAME}


def _confluent_produce(settings: Settings, topic: str, value: bytes) -> None:
    producer = Producer(settings.kafka_client_config() | {"acks": "all"})
    producer.produce(topic, key=b"k", value=value)
    assert producer.flush(15) == 0


async def _aiokafka_values(settings: Settings, topic: str, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.require_bootstrap(),
        group_id=None,
        auto_offset_reset="earliest",
        **aiokafka_security_kwargs(settings),
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + 20
        while len(values) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            values += [record.value for records in batches.values() for record in records]
    finally:
        await consumer.stop()
    return values


def _confluent_values(settings: Settings, topic: str, count: int) -> list[bytes]:
    consumer = Consumer(
        settings.kafka_client_config()
        | {"group.id": f"tls-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    )
    # assigned, not subscribed: a group join on Tansu takes its rebalance delay, TLS or not
    consumer.assign([ConfluentPartition(topic, 0, OFFSET_BEGINNING)])
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + 30
        while len(values) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(message.value() or b"")
    finally:
        consumer.close()
    return values
