"""The consumer lag gauges, sampled from a consumer's books (no broker)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from faust.types import TP

from streams._metrics import WorkerMetrics

TOUCHPOINTS = "touchpoints"


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
