"""Rebalances under load: workers join, leave and die in one consumer group while a scenario is
being produced, and the actions still equal what the pure engine computes offline.

The phases, each while customers keep arriving (the producer runs until the last one):
worker A alone; B joins (A's partitions are split); A is stopped gracefully (B takes them all);
C joins; B is SIGKILLed (C takes them all after B's session times out). Journey state and pending
timers move with their partitions through the changelog topics; each worker has its own data
directory, as on its own machine. As in test_chaos.py, every expected action must appear,
nothing unexpected may, and the two sets are equal after dedupe on `action_id`.
"""

from __future__ import annotations

import os
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from journeys import Engine, load_journeys, simulate
from schemas import (
    CustomerRef,
    Touchpoint,
    decode_action,
)
from streams import Settings, free_port
from tests.integration.harness import (
    FAST_JOURNEYS,
    TopicReader,
    WorkerProcess,
    isolated_settings,
    wait_for,
)
from tests.integration.scenarios import ScenarioProducer, abandoned_cart

pytestmark = pytest.mark.integration

CUSTOMERS_PER_SECOND = float(os.environ.get("POLKU_REBALANCE_RATE", "20"))
MAX_CUSTOMERS = int(os.environ.get("POLKU_REBALANCE_MAX_CUSTOMERS", "3000"))
PHASE_TIMEOUT = 120.0  # for one worker to join and process events: a failure guard only
SETTLE_TIMEOUT = 240.0


def _customer(n: int, start: datetime) -> list[Touchpoint]:
    """One customer abandons a cart; every third buys right after (before the reminder)."""
    phone = f"+35850{n:07d}" if n % 4 else None
    customer = CustomerRef(customer_id=f"rebalance-{n}", phone=phone)
    at = start + timedelta(milliseconds=n)
    return abandoned_cart(f"rebalance-{n}", customer, at, buys=n % 3 == 0)


def _samples(worker: WorkerProcess) -> list[Sample]:
    try:
        page = worker.metrics()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return []  # not up yet
    return [sample for family in text_string_to_metric_families(page) for sample in family.samples]


def processed(worker: WorkerProcess) -> float:
    """Events this worker's journey agent has processed."""
    return sum(s.value for s in _samples(worker) if s.name == "polku_events_total")


def owned(worker: WorkerProcess) -> set[int]:
    """The customer topic's partitions assigned to this worker (its lag gauges)."""
    topic = worker.settings.customer_topic
    return {
        int(s.labels["partition"])
        for s in _samples(worker)
        if s.name == "polku_consumer_lag" and s.labels.get("topic") == topic
    }


class Group:
    """Workers of one consumer group, each with its own data directory and metrics port."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self._settings = settings
        self._tmp_path = tmp_path
        self.workers: dict[str, WorkerProcess] = {}

    def start(self, name: str) -> WorkerProcess:
        own = self._settings.model_copy(
            update={"data_dir": self._tmp_path / f"data-{name}", "metrics_port": free_port()}
        )
        worker = WorkerProcess(own, self._tmp_path / f"worker-{name}.log").start()
        self.workers[name] = worker
        return worker

    def logs(self) -> str:
        return "\n".join(worker.log_tail() for worker in self.workers.values())

    def stop_all(self) -> None:
        for worker in self.workers.values():
            worker.stop()


@contextmanager
def group_of_workers(settings: Settings, tmp_path: Path) -> Iterator[Group]:
    group = Group(settings, tmp_path)
    try:
        yield group
    except BaseException:
        print(group.logs())
        raise
    finally:
        group.stop_all()


def test_workers_joining_leaving_and_dying_lose_no_action_and_invent_none(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = isolated_settings(kafka_bootstrap, tmp_path / "unused")
    reader = TopicReader(kafka_bootstrap, list(settings.action_topics.values()))
    try:
        producer, phases, expected = _run_the_phases(settings, reader, tmp_path)
    finally:
        reader.close()

    actions = [decode_action(m.value() or b"") for m in reader.messages]
    emitted = [action.action_id for action in actions]
    unexpected = sorted(
        {(a.customer_id, a.step_id, a.triggered_by) for a in actions}
        - {(a.customer_id, a.step_id, a.triggered_by) for a in actions if a.action_id in expected}
    )
    assert set(emitted) == expected, f"unexpected: {unexpected[:10]}"
    print(
        f"rebalance: {len(expected)} actions for {producer.count} customers, "
        f"{len(emitted) - len(set(emitted))} duplicates deduped by action_id; "
        f"phases: {'; '.join(phases)}"
    )


def _run_the_phases(
    settings: Settings, reader: TopicReader, tmp_path: Path
) -> tuple[ScenarioProducer, list[str], set[str]]:
    """Join, leave, join, crash while customers arrive; then wait for every expected action."""
    start = datetime.now(UTC)
    producer = ScenarioProducer(
        settings, CUSTOMERS_PER_SECOND, lambda n: _customer(n, start), limit=MAX_CUSTOMERS
    )
    everything = set(range(settings.partitions))
    phases: list[str] = []

    def phase(name: str) -> None:
        phases.append(f"{name} ({producer.count} customers produced)")

    with group_of_workers(settings, tmp_path) as group:
        try:
            a = group.start("a")
            producer.start()
            wait_for(lambda: processed(a) > 0, "worker A processes events", PHASE_TIMEOUT, a)
            phase("A alone")

            b = group.start("b")
            wait_for(
                lambda: processed(b) > 0, "worker B, joining, processes events", PHASE_TIMEOUT, a, b
            )
            assert owned(b) < everything, "B took every partition from A"
            phase("B joined A")

            # a graceful leave: A commits and hands its partitions over
            assert a.stop() == 0, a.log_tail()
            wait_for(
                lambda: owned(b) == everything, "worker B owns every partition", PHASE_TIMEOUT, b
            )
            b_before = processed(b)
            wait_for(lambda: processed(b) > b_before, "worker B goes on alone", PHASE_TIMEOUT, b)
            phase("A stopped")

            c = group.start("c")
            wait_for(
                lambda: processed(c) > 0, "worker C, joining, processes events", PHASE_TIMEOUT, b, c
            )
            phase("C joined B")

            # a crash: nothing committed or handed over; C waits out B's session
            b.kill()
            wait_for(
                lambda: owned(c) == everything, "worker C owns every partition", PHASE_TIMEOUT, c
            )
            c_before = processed(c)
            wait_for(lambda: processed(c) > c_before, "worker C goes on alone", PHASE_TIMEOUT, c)
            phase("B killed")
        finally:
            producer.stop(120)
        assert producer.delivered == len(producer.events), "the broker did not ack every event"
        events = producer.events

        wanted = simulate(Engine(load_journeys(FAST_JOURNEYS)), events).actions
        expected = {action.action_id for action in wanted}
        try:
            reader.wait_for(
                lambda ms: {decode_action(m.value() or b"").action_id for m in ms} >= expected,
                SETTLE_TIMEOUT,
                f"all {len(expected)} expected actions",
            )
        except AssertionError:
            seen = {decode_action(m.value() or b"").action_id for m in reader.messages}
            missing = sorted((a.customer_id, a.step_id) for a in wanted if a.action_id not in seen)
            print(f"phases: {'; '.join(phases)}\nmissing {len(missing)}: {missing[:40]}")
            _print_trail(settings, {customer for customer, _ in missing})
            raise
        reader.poll(2.0)  # anything unexpected or duplicated that is still on its way
        assert c.alive(), c.log_tail()
    return producer, phases, expected


def _print_trail(settings: Settings, customers: set[str]) -> None:
    """On failure: every record about the missing customers, and the group's committed offsets.

    A lost action shows where its customer's trail stops: a touchpoint never re-keyed onto the
    customer topic, a customer-topic record whose state was never written, a state parked on a
    timer that never fired.
    """
    bootstrap = settings.require_bootstrap()
    inputs = [settings.touchpoints_topic, settings.identity_topic, settings.customer_topic]
    reader = TopicReader(bootstrap, [*inputs, f"{settings.app_id}-journey_state-changelog"])
    try:
        reader.poll(20.0)
    finally:
        reader.close()
    for m in reader.messages:
        key, value = m.key() or b"", m.value() or b""
        if key.decode() in customers:
            print(f"  {m.topic()}[{m.partition()}]@{m.offset()} key={key!r} {value[:100]!r}")
    group = Consumer({"bootstrap.servers": bootstrap, "group.id": settings.app_id})
    try:
        for topic in inputs:
            partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
            committed = group.committed(partitions, timeout=10)
            print(f"  committed {topic}: {[(tp.partition, tp.offset) for tp in committed]}")
    finally:
        group.close()
