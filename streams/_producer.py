"""A typed, validating touchpoint producer on confluent-kafka (idempotent, keyed by customer)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer

from schemas import InvalidEventError, Touchpoint, encode, touchpoint_from_dict
from streams._errors import BrokerError
from streams._settings import Settings

_FLUSH_TIMEOUT_SECONDS = 30.0


@dataclass
class ProduceReport:
    sent: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class TouchpointProducer:
    """`TouchpointProducer(settings).send(event)`: validated, keyed by the customer, acked on
    `flush()`/`close()`. Delivery failures are collected and raised, never swallowed."""

    def __init__(self, settings: Settings) -> None:
        self._topic = settings.touchpoints_topic
        self._failures: list[str] = []
        self._delivered = 0
        self._producer = Producer(
            settings.kafka_client_config()
            | {
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                # the Java client's partitioner, which aiokafka (and so Faust) use too: the same
                # customer key must land on the same partition whichever client produced it
                "partitioner": "murmur2_random",
            }
        )

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

    def flush(self) -> int:
        """Wait for every produced event; return how many were delivered so far."""
        remaining = self._producer.flush(_FLUSH_TIMEOUT_SECONDS)
        if remaining:
            raise BrokerError(f"{remaining} events not acknowledged in {_FLUSH_TIMEOUT_SECONDS}s")
        if self._failures:
            raise BrokerError("delivery failed: " + "; ".join(self._failures[:5]))
        return self._delivered

    def close(self) -> int:
        return self.flush()


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
