"""The consumer lag gauges, sampled from a consumer's books (no broker)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from faust.types import TP

from streams._metrics import WorkerMetrics

TOUCHPOINTS = "touchpoints"
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


@dataclass
class Consumer:
    highwaters: dict[TP, int]
    positions: dict[TP, int] = field(default_factory=dict)

    def assignment(self) -> set[TP]:
        return set(self.highwaters)

    def highwater(self, tp: TP) -> int:
        return self.highwaters[tp]

    async def position(self, tp: TP) -> int:
        return self.positions[tp]


def _gauge(metrics: WorkerMetrics, name: str, partition: int) -> float | None:
    labels = {"topic": TOUCHPOINTS, "partition": str(partition)}
    return metrics.registry.get_sample_value(name, labels)


def test_lag_is_the_highwater_minus_the_next_record_to_process() -> None:
    consumer = Consumer(
        highwaters={TP(TOUCHPOINTS, 0): 50, TP(TOUCHPOINTS, 1): 7},
        positions={TP(TOUCHPOINTS, 1): 3},
    )
    metrics = WorkerMetrics()
    metrics.processed(TOUCHPOINTS, 0, 39)  # next to process: 40

    asyncio.run(metrics.sample_lag(consumer, [TOUCHPOINTS]))

    assert _gauge(metrics, "polku_consumer_lag", 0) == 10
    assert _gauge(metrics, "polku_consumer_lag", 1) == 4  # nothing processed: the position
    assert _gauge(metrics, "polku_consumer_highwater", 0) == 50


def test_a_revoked_partition_s_gauges_go() -> None:
    consumer = Consumer(highwaters={TP(TOUCHPOINTS, 0): 50, TP(TOUCHPOINTS, 1): 7})
    metrics = WorkerMetrics()
    metrics.processed(TOUCHPOINTS, 0, 49)
    metrics.processed(TOUCHPOINTS, 1, 6)
    asyncio.run(metrics.sample_lag(consumer, [TOUCHPOINTS]))

    del consumer.highwaters[TP(TOUCHPOINTS, 1)]
    asyncio.run(metrics.sample_lag(consumer, [TOUCHPOINTS]))

    assert _gauge(metrics, "polku_consumer_lag", 0) == 0
    assert _gauge(metrics, "polku_consumer_lag", 1) is None


@dataclass
class StoppingConsumer(Consumer):
    """A consumer whose event loop has closed under it, as when the worker stops."""

    stopped: bool = False

    async def position(self, tp: TP) -> int:
        self.stopped = True
        raise RuntimeError("Event loop is closed")


def test_sampling_ends_quietly_once_the_worker_stops(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("streams._metrics.LAG_SAMPLE_SECONDS", 0.0)
    consumer = StoppingConsumer(highwaters={TP(TOUCHPOINTS, 0): 5})
    metrics = WorkerMetrics()

    asyncio.run(
        asyncio.wait_for(
            metrics.sample_forever(
                consumer, [TOUCHPOINTS], lambda: None, lambda: NOW, lambda: consumer.stopped
            ),
            timeout=5,
        )
    )

    assert consumer.stopped
    assert "not sampled" not in caplog.text


def test_a_failed_sample_of_a_running_worker_is_logged_and_sampling_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("streams._metrics.LAG_SAMPLE_SECONDS", 0.0)
    consumer = StoppingConsumer(highwaters={TP(TOUCHPOINTS, 0): 5})
    metrics = WorkerMetrics()
    samples: list[int] = []

    def stopping() -> bool:
        samples.append(1)
        return len(samples) > 4  # two samples, each asking twice (before, and on a failure)

    asyncio.run(
        asyncio.wait_for(
            metrics.sample_forever(consumer, [TOUCHPOINTS], lambda: None, lambda: NOW, stopping),
            timeout=5,
        )
    )

    assert caplog.text.count("consumer lag not sampled") == 1  # once per distinct error
