"""A typed, validating touchpoint producer on confluent-kafka (idempotent, keyed by customer)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from schemas import InvalidEventError, Touchpoint, encode, touchpoint_from_dict
from streams._errors import BrokerError
from streams._settings import Settings

log = logging.getLogger("polku.producer")

_FLUSH_TIMEOUT_SECONDS = 30.0
_POLL_SECONDS = 0.1

Headers = Sequence[tuple[str, bytes]]


@dataclass
class ProduceReport:
    sent: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class TouchpointProducer:
    """`TouchpointProducer(settings).send(event)`: validated, keyed by the customer, acked on
    `flush()`/`close()`. Delivery failures are collected and raised, never swallowed.

    `submit(event)` is the per-event form for servers: it returns a future that the broker's ack
    (or the failure) completes, served by a background thread, so an asyncio caller can await
    it with `asyncio.wrap_future` and answer only once the event is safe.

    `message_timeout_seconds` bounds how long librdkafka keeps retrying one event; a caller that
    gives up waiting after that long knows the event has failed rather than still being in flight.
    """

    def __init__(self, settings: Settings, *, message_timeout_seconds: float | None = None) -> None:
        self._topic = settings.touchpoints_topic
        self._failures: list[str] = []
        self._delivered = 0
        self._poller: threading.Thread | None = None
        self._closing = threading.Event()
        config: dict[str, str | int | float | bool] = {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            # the Java client's partitioner, which aiokafka (and so Faust) use too: the same
            # customer key must land on the same partition whichever client produced it
            "partitioner": "murmur2_random",
        }
        if message_timeout_seconds is not None:
            config["message.timeout.ms"] = max(1, int(message_timeout_seconds * 1000))
        self._producer = Producer(settings.kafka_client_config() | config)

    def send(self, event: Touchpoint) -> None:
        self.send_raw(event.customer.key.encode(), encode(event))

    def send_raw(self, key: bytes | None, value: bytes) -> None:
        """Produce bytes as they are (used for replay and for testing the dead-letter path)."""
        while True:
            try:
                self._producer.produce(self._topic, value=value, key=key, on_delivery=self._done)
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)

    def _done(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failures.append(f"{message.topic()}: {error.str()}")
        else:
            self._delivered += 1

    def submit(self, event: Touchpoint, *, headers: Headers | None = None) -> Future[None]:
        """Produce one event keyed by its customer; the future completes on the broker's ack."""
        return self.submit_raw(event.customer.key.encode(), encode(event), headers=headers)

    def submit_raw(
        self,
        key: bytes | None,
        value: bytes,
        *,
        topic: str | None = None,
        headers: Headers | None = None,
    ) -> Future[None]:
        """Produce bytes to `topic` (default: the touchpoints topic) without blocking.

        Raises `BrokerError` at once when the local queue is full (the broker is slow or away):
        back-pressure for the caller, nothing was queued. The future fails with `BrokerError`
        when the broker does not take the record.
        """
        acked: Future[None] = Future()
        target = topic or self._topic

        def done(error: KafkaError | None, _message: Message) -> None:
            try:
                if error is None:
                    self._delivered += 1
                    acked.set_result(None)
                else:
                    acked.set_exception(BrokerError(f"{target}: {error.str()}"))
            except InvalidStateError:
                pass  # the caller stopped waiting (cancelled); the outcome is no longer wanted

        try:
            self._producer.produce(
                target, value=value, key=key, headers=list(headers or []), on_delivery=done
            )
        except BufferError:
            raise BrokerError(
                f"the producer queue is full ({len(self._producer)} records wait for the broker)"
            ) from None
        except KafkaException as exc:
            raise BrokerError(f"cannot produce to {target}: {exc}") from exc
        self._start_polling()
        return acked

    @property
    def in_flight(self) -> int:
        """Records produced but not yet acked or failed."""
        return len(self._producer)

    def _start_polling(self) -> None:
        if self._poller is None:
            self._poller = threading.Thread(
                target=self._serve_deliveries, name="polku-producer-poll", daemon=True
            )
            self._poller.start()

    def _serve_deliveries(self) -> None:
        while not self._closing.is_set():
            try:
                self._producer.poll(_POLL_SECONDS)
            except Exception:  # a failing callback must not stop every later ack
                log.exception("a delivery callback failed")

    def flush(self) -> int:
        """Wait for every produced event; return how many were delivered so far."""
        remaining = self._producer.flush(_FLUSH_TIMEOUT_SECONDS)
        if remaining:
            raise BrokerError(f"{remaining} events not acknowledged in {_FLUSH_TIMEOUT_SECONDS}s")
        if self._failures:
            raise BrokerError("delivery failed: " + "; ".join(self._failures[:5]))
        return self._delivered

    def close(self) -> int:
        """Flush, then release the client (its threads and connections) once nothing waits."""
        if self._closing.is_set():
            return self._delivered
        try:
            return self.flush()
        finally:
            self._closing.set()
            if self._poller is not None:
                self._poller.join(timeout=5)
            if len(self._producer) == 0:
                # with records left, closing would wait for them without a bound
                self._producer.close()


def produce_lines(settings: Settings, lines: Iterable[bytes]) -> ProduceReport:
    """Validate JSON lines and produce the valid ones; report what was rejected and why."""
    report = ProduceReport()
    producer = TouchpointProducer(settings)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = touchpoint_from_dict(_json(line), line)
        except InvalidEventError as exc:
            report.rejected.append((number, exc.reason))
            continue
        producer.send(event)
        report.sent += 1
    try:
        producer.close()
    except BrokerError as exc:
        report.failed.append(str(exc))
    return report


def _json(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InvalidEventError(f"not JSON: {exc}", line) from None
