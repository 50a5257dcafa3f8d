"""Real processes and real Kafka clients for the integration tests: no mocks here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from confluent_kafka import Consumer, Message, TopicPartition

from schemas import Touchpoint
from streams import Settings, TouchpointProducer, ensure_topics, free_port
from streams._topics import run_scoped

REPO_ROOT = Path(__file__).resolve().parents[2]
FAST_JOURNEYS = REPO_ROOT / "tests" / "fixtures" / "journeys"
SLOW_JOURNEYS = REPO_ROOT / "tests" / "fixtures" / "journeys_slow"
POLICIES = REPO_ROOT / "tests" / "fixtures" / "policies"


def isolated_settings(
    bootstrap: str, data_dir: Path, journeys_dir: Path | None = FAST_JOURNEYS, **overrides: object
) -> Settings:
    """Settings whose app id and topics belong to one test only, so tests cannot see each other."""
    run = f"t{uuid.uuid4().hex[:10]}"
    values: dict[str, object] = run_scoped(run) | {
        "kafka_bootstrap": bootstrap,
        "data_dir": data_dir,
        "journeys_dir": journeys_dir,
        # journeys alone decide unless a test sets a policy: see tests/journeys/test_policy.py
        "contact_policy_file": POLICIES / "permissive.yaml",
        "metrics_port": free_port(),
        "log_level": "info",
    }
    settings = Settings(**(values | overrides))  # type: ignore[arg-type]
    ensure_topics(settings)
    return settings


_STARTED: list[PolkuProcess] = []


def stop_leftover_processes() -> list[str]:
    """Stop every process a test started and left running; their command lines."""
    leftovers = [started for started in _STARTED if started.alive()]
    for started in leftovers:
        started.stop()
    _STARTED.clear()
    return [" ".join(started.args) for started in leftovers]


@dataclass
class PolkuProcess:
    """A `polku ...` subcommand in its own process, as in production."""

    settings: Settings
    args: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> Self:
        env = {key: value for key, value in os.environ.items() if not key.startswith("POLKU_")}
        env |= self.settings.to_env()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", *self.args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
            )
        _STARTED.append(self)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, nothing is flushed or committed."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        return process.returncode

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- polku {' '.join(self.args)} ---\n" + "\n".join(text)


class WorkerProcess(PolkuProcess):
    """`polku worker`, with its metrics at hand."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        super().__init__(settings, ["worker"], log_path)

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.settings.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())


class TopicReader:
    """Reads topics from their beginning with a plain consumer (no group, no commits)."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}"}
        )
        metadata = self._consumer.list_topics(timeout=10).topics
        self._consumer.assign(
            [
                TopicPartition(topic, partition, 0)
                for topic in topics
                for partition in metadata[topic].partitions
            ]
        )
        self.messages: list[Message] = []

    def poll(self, seconds: float) -> list[Message]:
        fresh: list[Message] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for message in self._consumer.consume(100, timeout=0.1):
                if message.error() is None:
                    fresh.append(message)
        self.messages.extend(fresh)
        return fresh

    def wait_for(
        self, found: Callable[[list[Message]], bool], timeout: float, why: str
    ) -> list[Message]:
        deadline = time.monotonic() + timeout
        while not found(self.messages):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {why}")
            self.poll(0.2)
        return self.messages

    def close(self) -> None:
        self._consumer.close()


def committed_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """The worker group's committed offset per partition of `topic` (its group is its app id)."""
    consumer = Consumer(
        {"bootstrap.servers": settings.require_bootstrap(), "group.id": settings.app_id}
    )
    try:
        metadata = consumer.list_topics(timeout=10).topics[topic]
        partitions = [TopicPartition(topic, p) for p in metadata.partitions]
        committed = consumer.committed(partitions, timeout=10)
        return {tp.partition: max(tp.offset, 0) for tp in committed}
    finally:
        consumer.close()


def committed_offset(settings: Settings, topic: str) -> int:
    """The sum of the worker group's committed offsets on `topic`."""
    return sum(committed_offsets(settings, topic).values())


def wait_until_committed(settings: Settings, worker: WorkerProcess, timeout: float = 60.0) -> None:
    """Until the worker has committed one touchpoint and all it forwarded to the customer topic.

    A touchpoint is committed once its batch is saved: its journey state is written then when
    the identity step handed it to the journey step directly, and when it took the customer
    topic instead, that record's commit says the journey step has processed it.
    """
    deadline = time.monotonic() + timeout
    forwarded = TopicReader(settings.require_bootstrap(), [settings.customer_topic])
    try:
        while True:
            assert worker.process is not None
            assert worker.process.poll() is None, worker.log_tail()
            assert time.monotonic() < deadline, "the worker never committed the event"
            if committed_offset(settings, settings.touchpoints_topic) < 1:
                time.sleep(0.1)
                continue
            # acked before the touchpoint's commit: on the topic by now
            forwarded.poll(0.5)
            ends: dict[int, int] = {}
            for record in forwarded.messages:
                ends[record.partition() or 0] = (record.offset() or 0) + 1
            committed = committed_offsets(settings, settings.customer_topic)
            if all(committed.get(partition, 0) >= end for partition, end in ends.items()):
                return
    finally:
        forwarded.close()


def wait_for(
    condition: Callable[[], bool], why: str, timeout: float, *processes: PolkuProcess
) -> None:
    """Until `condition()` holds, failing at once when one of `processes` exits."""
    deadline = time.monotonic() + timeout
    while not condition():
        for process in processes:
            assert process.alive(), f"while waiting for {why}:\n{process.log_tail()}"
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {why}"
        time.sleep(0.2)


def produce(settings: Settings, *events: Touchpoint) -> None:
    """Produce `events` in order and wait until the broker has acked every one."""
    producer = TouchpointProducer(settings)
    for event in events:
        producer.send(event)
    assert producer.close() == len(events), "the broker did not ack every event"
