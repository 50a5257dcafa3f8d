"""The worker's producer against a real broker: acks, keying, flush, and its place in Faust."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
import pytest_asyncio
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import KafkaError

from streams import Settings, ensure_topics
from streams._client_producer import (
    ClientProducer,
    ClientTopic,
    Delivered,
    install_client_producer,
)
from streams._errors import BrokerError
from tests.integration.harness import TopicReader

pytestmark = pytest.mark.integration

PARTITIONS = 4


def _settings(bootstrap: str, tmp_path: Path) -> Settings:
    return Settings(kafka_bootstrap=bootstrap, data_dir=tmp_path, partitions=PARTITIONS)


@pytest_asyncio.fixture
async def producer(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[ClientProducer]:
    started = ClientProducer(_settings(kafka_bootstrap, tmp_path))
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


def _topic(kafka_bootstrap: str, tmp_path: Path, name: str) -> str:
    topic = f"{name}-{tmp_path.name}"
    ensure_topics(_settings(kafka_bootstrap, tmp_path), [topic])
    return topic


@pytest.mark.asyncio
async def test_each_record_is_acked_with_where_it_was_written(
    producer: ClientProducer, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = ClientTopic(producer, _topic(kafka_bootstrap, tmp_path, "acks"))
    keys = [f"customer-{n}".encode() for n in range(30)]
    acks = [await topic.send(key=key, value=b"v-" + key) for key in keys]
    pinned = await topic.send(
        key=b"pinned", value=b"to 2", partition=2, headers=[("polku.kind", b"x")]
    )

    delivered = await asyncio.gather(*acks, pinned)

    partition_of = DefaultPartitioner()
    every = list(range(PARTITIONS))
    # the partitioner of aiokafka (and Faust, and the Java client): one customer, one partition
    assert [d.partition for d in delivered[:-1]] == [
        partition_of(key, every, every) for key in keys
    ]
    assert delivered[-1] == Delivered(topic.name, 2, delivered[-1].offset)
    for partition in every:
        offsets = sorted(d.offset for d in delivered if d.partition == partition)
        assert offsets == list(range(len(offsets)))
    reader = TopicReader(kafka_bootstrap, [topic.name])
    messages = reader.wait_for(lambda ms: len(ms) == len(keys) + 1, 20, "every record")
    reader.close()
    written = {(m.partition(), m.offset()): m for m in messages}
    for key, ack in zip(keys, delivered, strict=False):
        assert written[ack.partition, ack.offset].value() == b"v-" + key
    last = written[2, delivered[-1].offset]
    assert last.key() == b"pinned"
    assert last.headers() == [("polku.kind", b"x")]


@pytest.mark.asyncio
async def test_flush_waits_for_every_record_sent_before_it(
    producer: ClientProducer, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = ClientTopic(producer, _topic(kafka_bootstrap, tmp_path, "flush"))
    acks = [await topic.send(key=b"k%d" % n, value=b"v") for n in range(200)]
    assert not all(ack.done() for ack in acks)  # nothing waited for them yet

    await producer.flush()

    assert all(ack.done() and ack.exception() is None for ack in acks)


@pytest.mark.asyncio
async def test_send_now_has_what_lingers_sent_without_waiting_out_the_linger(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    lingering = ClientProducer(_settings(kafka_bootstrap, tmp_path))
    # a minute's linger (the settings allow a second): without send_now the records would
    # not be acked within the test's patience, with it they are at once
    lingering._config["linger.ms"] = 60_000
    await lingering.start()
    try:
        topic = ClientTopic(lingering, _topic(kafka_bootstrap, tmp_path, "now"))
        # the producer's first records wait for its producer id; librdkafka's own flush
        # (which waits for every ack) gets it one, so only the linger is left to skip
        await topic.send(key=b"warm", value=b"up")
        client = lingering._producer
        assert client is not None
        assert await asyncio.get_running_loop().run_in_executor(None, client.flush, 30) == 0
        acks = [await topic.send(key=b"k%d" % n, value=b"v") for n in range(20)]
        assert not any(ack.done() for ack in acks)

        lingering.send_now()

        delivered = await asyncio.wait_for(asyncio.gather(*acks), timeout=30)
        assert len({(d.partition, d.offset) for d in delivered}) == 20
    finally:
        await lingering.stop()


class _BlockingFlush:
    """A stand-in librdkafka producer whose flush waits until it is let go."""

    def __init__(self) -> None:
        self.flushes = 0
        self.let_go = threading.Event()
        self.flushing = threading.Event()

    def flush(self, timeout: float) -> int:
        self.flushes += 1
        self.flushing.set()
        self.let_go.wait(timeout=30)
        return 0


def test_send_now_runs_one_flush_at_a_time_and_keeps_at_most_one_waiting(
    tmp_path: Path,
) -> None:
    producer = ClientProducer(_settings("127.0.0.1:9", tmp_path))
    flush = _BlockingFlush()
    producer._producer = flush  # type: ignore[assignment]
    try:
        producer.send_now()
        assert flush.flushing.wait(timeout=30)  # the first one runs
        for _ in range(5):
            producer.send_now()  # one waits for it, the rest are served by that one
        flush.let_go.set()
    finally:
        producer._sender.shutdown(wait=True)

    assert flush.flushes == 2


@pytest.mark.asyncio
async def test_a_record_the_broker_did_not_take_fails_its_future(
    producer: ClientProducer,
) -> None:
    loop = asyncio.get_running_loop()
    failed: asyncio.Future[Delivered] = loop.create_future()
    message = SimpleNamespace(topic=lambda: "actions.email", partition=lambda: 1, offset=lambda: -1)

    # as librdkafka's thread reports it: the loop resolves the future on its next turn
    producer._acked(failed, KafkaError(KafkaError._MSG_TIMED_OUT), message)  # type: ignore[arg-type]
    assert not failed.done()
    await asyncio.sleep(0.1)

    with pytest.raises(BrokerError, match=r"actions\.email: .*timed out"):
        failed.result()


@pytest.mark.asyncio
async def test_a_stopped_producer_refuses_records(kafka_bootstrap: str, tmp_path: Path) -> None:
    producer = ClientProducer(_settings(kafka_bootstrap, tmp_path))
    topic = _topic(kafka_bootstrap, tmp_path, "stopped")
    with pytest.raises(BrokerError, match="not running"):
        await producer.send(topic, b"k", b"v")
    await producer.start()
    ack = await producer.send(topic, b"k", b"v")
    await producer.stop()
    # stopping flushed what was sent
    assert ack.done()
    assert ack.result().offset == 0
    with pytest.raises(BrokerError, match="not running"):
        await producer.send(topic, b"k", b"v")


class _FaustProducer:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def flush(self) -> None:
        self.log.append("faust")


@pytest.mark.asyncio
async def test_faust_runs_it_after_its_own_producer_and_flushes_it_before_commits(
    tmp_path: Path,
) -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:9", data_dir=tmp_path)
    app = faust.App("client-producer-test", broker="kafka://127.0.0.1:9", autodiscover=False)
    client = ClientProducer(settings)
    install_client_producer(app, client)

    boot: Any = app.boot_strategy
    services = list(boot.kafka_producer())

    # mode starts dependencies in this order and stops them in reverse: ours stops first,
    # after the consumer (which Faust stops before its producer) has made its last commit
    assert services == [app.producer, client]
    log: list[str] = []

    async def record_client_flush() -> None:
        log.append("client")

    client.flush = record_client_flush  # type: ignore[method-assign]
    app.producer.buffer.flush = _FaustProducer(log).flush  # type: ignore[method-assign]
    await app.producer.flush()  # what the consumer awaits before it commits
    assert log == ["faust", "client"]
    # the wrapping is done once, however often Faust asks for the list
    list(boot.kafka_producer())
    log.clear()
    await app.producer.flush()
    assert log == ["faust", "client"]
