"""The worker's producer: librdkafka (confluent-kafka), with its network work off the event loop.

Everything the worker writes (actions, suppression and dead-letter records, the customer and
identity topics, the tables' changelogs) goes through one `ClientProducer`. Through Faust's
`Topic.send` and aiokafka, a record cost the event loop a `FutureMessage`, the accumulator,
the protocol encoding and the sender's request and response handling: ~20 % of the worker's
samples in B1 (py-spy, 2026-12-04). librdkafka batches, encodes and talks to the broker in
its own threads; the event loop hands a record over in one call and hears of the acks in bulk.

It is tied to the Faust app (`install_client_producer`): started after Faust's producer and
stopped before it, so after the consumer's last commit, and Faust's flush before every commit
also waits for every record sent here, as it did for the changelog records it sent itself.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import mode
from confluent_kafka import KafkaError, Message, Producer
from faust.app.base import BootStrategy

from streams._errors import BrokerError
from streams._settings import Settings

log = logging.getLogger("polku.worker")

Headers = list[tuple[str, bytes]]

# how long the polling thread waits for acks before it looks at `closing` again
_POLL_SECONDS = 0.05
# librdkafka's local queue is full (the broker is slow or away): wait, then try again
_QUEUE_FULL_PAUSE_SECONDS = 0.005
_QUEUE_FULL_LIMIT_SECONDS = 60.0
_CLOSE_FLUSH_SECONDS = 30.0
# how long one `send_now` keeps librdkafka sending without its linger (its flush, in a thread);
# long enough for its threads to wake and send what is queued, short enough not to hold acks
_SEND_NOW_SECONDS = 0.01


@dataclass(frozen=True, slots=True)
class Delivered:
    """Where the broker wrote a record (the fields of aiokafka's `RecordMetadata` read here)."""

    topic: str
    partition: int
    offset: int


class ClientProducer(mode.Service):
    """`await send(...)` queues a record in librdkafka and returns a future of its ack.

    A thread polls librdkafka for acks and hands them to the event loop in bulk, one
    `call_soon_threadsafe` per poll rather than one per record.
    """

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._config = settings.kafka_client_config() | {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": settings.producer_linger_seconds * 1000,
            # the Java client's partitioner, which aiokafka (and so Faust) use too: a keyed
            # record must land where every other client of these topics puts that key
            "partitioner": "murmur2_random",
        }
        self._producer: Producer | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._acks: deque[tuple[asyncio.Future[Delivered], KafkaError | None, Message]] = deque()
        self._resolve_scheduled = False
        self._unacked: set[asyncio.Future[Delivered]] = set()
        self._closing = threading.Event()
        self._poller: threading.Thread | None = None
        # `send_now`: one flush at a time in a thread of its own, and at most one waiting
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="polku-send-now")
        self._send_lock = threading.Lock()
        self._send_waiting = False

    async def on_start(self) -> None:
        self._event_loop = asyncio.get_running_loop()
        self._producer = Producer(self._config)
        self._poller = threading.Thread(
            target=self._poll_forever, name="polku-producer-acks", daemon=True
        )
        self._poller.start()

    async def on_stop(self) -> None:
        producer = self._producer
        if producer is None:
            return
        loop = asyncio.get_running_loop()
        left = await loop.run_in_executor(None, producer.flush, _CLOSE_FLUSH_SECONDS)
        if left:
            log.error("producer stopped with %d records the broker has not acked", left)
        self._closing.set()
        self._sender.shutdown(wait=False, cancel_futures=True)
        if self._poller is not None:
            await loop.run_in_executor(None, self._poller.join)
        self._resolve()

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> asyncio.Future[Delivered]:
        """Queue one record; the future completes with the broker's ack, or fails."""
        if self._producer is None or self._event_loop is None or self._closing.is_set():
            raise BrokerError(f"{topic}: the worker's producer is not running")
        acked: asyncio.Future[Delivered] = self._event_loop.create_future()
        options: dict[str, Any] = {}
        if partition is not None:
            options["partition"] = partition
        if headers:
            options["headers"] = headers

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            self._acked(acked, error, message)

        deadline = time.monotonic() + _QUEUE_FULL_LIMIT_SECONDS
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=on_delivery, **options)
                break
            except BufferError:
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"{topic}: the producer queue stayed full for "
                        f"{_QUEUE_FULL_LIMIT_SECONDS:.0f} s ({len(self._producer)} records)"
                    ) from None
                await asyncio.sleep(_QUEUE_FULL_PAUSE_SECONDS)
        self._unacked.add(acked)
        return acked

    def send_now(self) -> None:
        """Have what the producer holds back (`linger.ms`) sent at once; returns at once.

        The acks come as for any record, so a caller waits for those of its own records only.
        librdkafka skips its linger only while a `flush` runs, and a flush waits for every
        record not yet acked, those of other batches too (each state's changelog record), so
        it runs in a thread of its own for `_SEND_NOW_SECONDS` at most: a flush wakes the
        client's threads when it begins, which then send everything queued. A call while one
        waits to begin is already served by it; one that comes while it runs gets the next.
        """
        if self._producer is None or self._closing.is_set():
            return
        with self._send_lock:
            if self._send_waiting:
                return
            self._send_waiting = True
        self._sender.submit(self._send_queued, self._producer)

    def _send_queued(self, producer: Producer) -> None:
        with self._send_lock:
            self._send_waiting = False
        producer.flush(_SEND_NOW_SECONDS)

    async def flush(self) -> None:
        """Wait until every record sent so far is acked or has failed."""
        pending = list(self._unacked)
        if pending:
            await asyncio.wait(pending)

    def _poll_forever(self) -> None:
        producer = self._producer
        assert producer is not None
        while not self._closing.is_set():
            producer.poll(_POLL_SECONDS)

    def _acked(
        self, future: asyncio.Future[Delivered], error: KafkaError | None, message: Message
    ) -> None:
        # librdkafka's thread (poll or flush): only hand over, the loop resolves
        self._acks.append((future, error, message))
        if not self._resolve_scheduled and self._event_loop is not None:
            self._resolve_scheduled = True
            self._event_loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        # reset first: an ack appended from now on schedules another call
        self._resolve_scheduled = False
        acks = self._acks
        unacked = self._unacked
        while acks:
            future, error, message = acks.popleft()
            unacked.discard(future)
            if future.done():
                continue  # the caller stopped waiting
            partition, offset = message.partition(), message.offset()
            if error is None and partition is not None and offset is not None:
                future.set_result(Delivered(str(message.topic()), partition, offset))
            else:
                reason = error.str() if error is not None else "acked without an offset"
                future.set_exception(BrokerError(f"{message.topic()}: {reason}"))


class ClientTopic:
    """A topic the worker writes to through its `ClientProducer`."""

    def __init__(self, producer: ClientProducer, name: str) -> None:
        self.producer = producer
        self.name = name

    async def send(
        self,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[Delivered]:
        return await self.producer.send(self.name, key, value, partition, headers)


def install_client_producer(app: Any, producer: ClientProducer) -> None:
    """Run `producer` with `app`: started after Faust's producer and stopped before it (so
    after the consumer's last commit), and flushed by every flush Faust makes of its own."""

    class _Boot(BootStrategy):
        def kafka_producer(self) -> Iterable[Any]:
            services = list(super().kafka_producer())
            if services:
                _flush_with(self.app.producer, producer)
                services.append(producer)
            return services

    app.boot_strategy = _Boot(app)


def _flush_with(faust_producer: Any, producer: ClientProducer) -> None:
    """Faust flushes its producer before it commits offsets: flush ours there too."""
    if getattr(faust_producer, "_polku_flushes_client", False):
        return
    flush_own = faust_producer.flush

    async def flush_both() -> None:
        await flush_own()
        await producer.flush()

    faust_producer.flush = flush_both
    faust_producer._polku_flushes_client = True
