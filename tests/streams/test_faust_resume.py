"""The end of a rebalance: records fetched while the partitions are sought are not thrown away,
and a fetch takes no record of a partition that is not active.

Faust's recovery runs on a stand-in that has what `on_recovery_completed` uses. Its consumer
fetches as Faust's drain loop does: every record from a partition's position to its end, for
each partition not paused, into an agent's queue that mode's real flow control manages (and
clears when flow resumes). A fetch happens while the partitions are sought, as it does on the
consumer thread while the seek waits on the broker, and once more after the recovery.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from faust.types import TP
from mode.utils.queues import FlowControlEvent, FlowControlQueue

from streams import Settings, _faust_resume, ensure_topics
from streams._faust_fixes import returned_offset
from streams._faust_resume import (
    FAUST_FETCH_RECORDS,
    FAUST_ON_RECOVERY_COMPLETED,
    ActivePartitions,
    fetch_only_active,
    on_recovery_completed,
    wait_next_records_promptly,
)

TOUCHPOINTS = TP("touchpoints", 0)
CHANGELOG = TP("app-journey_state-changelog", 0)
COMMITTED, END = 50, 60

Completion = Callable[[Any, int], Coroutine[Any, Any, None]]


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, line: str) -> None:
        self.lines.append(line)

    warning = dev = info


class FetchingConsumer:
    """Faust's consumer as far as the recovery uses it, fetching as its drain loop does."""

    def __init__(self, queue: FlowControlQueue[tuple[TP, int]]) -> None:
        self.queue = queue
        self.paused = {TOUCHPOINTS, CHANGELOG}  # as Faust leaves them after the changelogs
        self.position = {TOUCHPOINTS: 0, CHANGELOG: 0}
        self.flow_active = True

    def assignment(self) -> set[TP]:
        return {TOUCHPOINTS, CHANGELOG}

    def fetch(self) -> None:
        if TOUCHPOINTS in self.paused or not self.flow_active:
            return
        for offset in range(self.position[TOUCHPOINTS], END):
            self.queue.put_nowait((TOUCHPOINTS, offset))
        self.position[TOUCHPOINTS] = END

    async def perform_seek(self) -> None:
        self.position[TOUCHPOINTS] = COMMITTED
        await asyncio.sleep(0)
        self.fetch()  # the consumer thread fetched while the seek waited on the broker

    def resume_partitions(self, tps: set[TP]) -> None:
        self.paused -= tps

    def resume_flow(self) -> None:
        self.flow_active = True


async def noop() -> None:
    return None


async def completed_recovery(completion: Completion) -> list[tuple[TP, int]]:
    """What the agent's queue holds once the recovery completed and the consumer fetched."""
    flow_control = FlowControlEvent()
    flow_control.resume()  # the changelog recovery turned flow on
    queue: FlowControlQueue[tuple[TP, int]] = FlowControlQueue(
        flow_control=flow_control, clear_on_resume=True
    )
    consumer = FetchingConsumer(queue)

    # the signature of Recovery._wait
    async def wait(coro: Coroutine[Any, Any, None], timeout: float | None = None) -> None:  # noqa: ASYNC109
        await coro

    tables = SimpleNamespace(
        values=list, on_actives_ready=lambda: None, on_standbys_ready=lambda: None
    )
    app = SimpleNamespace(
        consumer=consumer,
        flow_control=flow_control,
        consumer_generation_id=3,
        conf=SimpleNamespace(broker_request_timeout=10.0),
        on_rebalance_complete=SimpleNamespace(send=noop),
        _fetcher=SimpleNamespace(maybe_start=noop),
        assignor=SimpleNamespace(assigned_standbys=list),
        on_rebalance_end=lambda: None,
    )
    recovery = SimpleNamespace(
        app=app,
        log=Log(),
        tables=tables,
        actives_for_table={},
        standbys_for_table={},
        completed=asyncio.Event(),
        _set_recovery_ended=lambda: None,
        _wait=wait,
        _is_changelog_tp=lambda tp: tp.topic.endswith("-changelog"),
    )
    await completion(recovery, 3)
    assert recovery.completed.is_set()
    assert recovery.log.lines[-1] == "Worker ready"
    consumer.fetch()  # the drain loop's next fetch
    held = []
    while not queue.empty():
        held.append(queue.get_nowait())
    return held


def test_fausts_own_order_loses_the_records_fetched_during_the_seek() -> None:
    # the defect this module works around, reproduced on the stand-in: the records are
    # fetched (the position is at the end) and then cleared from the queue
    assert asyncio.run(completed_recovery(FAUST_ON_RECOVERY_COMPLETED)) == []


def test_every_record_from_the_committed_offset_reaches_the_agent_once() -> None:
    held = asyncio.run(completed_recovery(on_recovery_completed))
    assert held == [(TOUCHPOINTS, offset) for offset in range(COMMITTED, END)]


def test_the_copy_was_made_from_the_installed_fausts_method() -> None:
    # a Faust upgrade that changes the method must be looked at: the copy may need its changes
    source = inspect.getsource(FAUST_ON_RECOVERY_COMPLETED)
    assert hashlib.sha256(source.encode()).hexdigest() == (
        "6ef567acf072e46da3fccbccc6d662371f634f622c3d510972d5df81f70ae3ac"
    )


@pytest_asyncio.fixture
async def two_partitions(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer assigned both partitions of a new topic, five records in each, at offset 0."""
    settings = Settings(kafka_bootstrap=kafka_bootstrap, partitions=2)
    topic = f"fetch-{uuid.uuid4().hex[:8]}"
    ensure_topics(settings, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for partition in (0, 1):
            for n in range(5):
                await producer.send_and_wait(topic, b"%d" % n, partition=partition)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        await consumer.seek_to_beginning()
        yield consumer
    finally:
        await consumer.stop()


def partitions_of(records: dict[TopicPartition, list[Any]]) -> dict[int, int]:
    return {tp.partition: len(batch) for tp, batch in records.items()}


def faust_thread(changelogs: set[str]) -> Any:
    """Faust's consumer thread as the patched fetch uses it: its consumer, the app's tables."""
    app = SimpleNamespace(tables=SimpleNamespace(changelog_topics=changelogs))
    return SimpleNamespace(consumer=SimpleNamespace(flow_active=True, app=app))


async def fetch_until(
    fetcher: Any, thread: Any, consumer: AIOKafkaConsumer, active: set[TopicPartition]
) -> dict[int, int]:
    """What fetches return within 3 s (each waits at most 50 ms when patched)."""
    fetched: dict[int, int] = {}
    deadline = time.monotonic() + 3.0
    while not fetched and time.monotonic() < deadline:
        records = await fetcher(thread, consumer, active, timeout=1.0, max_records=100)
        fetched = partitions_of(records)
    return fetched


async def fetched_but_untaken(consumer: AIOKafkaConsumer, tp: TopicPartition) -> bool:
    """Whether aiokafka holds fetched records of `tp` that no call took (within 3 s)."""
    for _ in range(150):
        if tp in consumer._fetcher._records:
            return True
        await asyncio.sleep(0.02)
    return False


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_fetch_takes_only_partitions_in_the_live_set(
    two_partitions: AIOKafkaConsumer,
) -> None:
    consumer = two_partitions
    first, second = sorted(consumer.assignment())
    thread = faust_thread(changelogs=set())
    live = {first}

    async def fetch(fetcher: Any, active: set[TopicPartition]) -> dict[int, int]:
        return await fetch_until(fetcher, thread, consumer, active)

    assert await fetch(fetch_only_active, live) == {0: 5}
    live.clear()  # as the end of a changelog recovery leaves it, or a revoke an old fetch's
    assert await fetch(fetch_only_active, live) == {}  # 3 s of fetches took nothing
    assert await consumer.position(second) == 0  # the paused partition's records are still due
    # why: aiokafka reads an empty set as every partition, and Faust's `getmany` then skips
    # the records of the partition that is not active (its position is past them)
    assert await fetch(FAUST_FETCH_RECORDS, live) == {1: 5}


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_changelog_faust_does_not_take_is_paused_and_its_records_left_for_later(
    two_partitions: AIOKafkaConsumer,
) -> None:
    consumer = two_partitions
    stream, changelog = sorted(consumer.assignment())  # the topic plays both parts
    live = {stream}
    # why: aiokafka fetches every partition Faust has paused in its own books, and holds back
    # every fetch to the broker for up to 0.1 s while such records wait untaken
    assert await fetch_until(FAUST_FETCH_RECORDS, faust_thread(set()), consumer, live) == {0: 5}
    assert await fetched_but_untaken(consumer, changelog)

    thread = faust_thread({changelog.topic})
    assert await fetch_until(fetch_only_active, thread, consumer, live) == {}
    assert consumer.paused() == {changelog}
    assert changelog not in consumer._fetcher._records  # dropped, and not fetched again
    assert stream not in consumer.paused()
    assert await consumer.position(changelog) == 0

    live.add(changelog)  # a recovery takes it: resumed, and every record is still there
    assert await fetch_until(fetch_only_active, thread, consumer, live) == {1: 5}
    assert consumer.paused() == set()


def test_a_fetch_waits_briefly_for_records() -> None:
    # a fetch under way while the partitions are resumed would otherwise wait out Faust's 1 s
    seen: dict[str, Any] = {}

    async def faust_fetch(self: Any, consumer: Any, active: Any, **kwargs: Any) -> dict[Any, Any]:
        seen.update(active=active, **kwargs)
        return {}

    async def run(wait: float) -> None:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_faust_resume, "FAUST_FETCH_RECORDS", faust_fetch)
            patch.setattr(_faust_resume, "pause_untaken_changelogs", lambda *_: None)
            await fetch_only_active(faust_thread(set()), None, set(), timeout=wait, max_records=10)

    asyncio.run(run(1.0))
    assert seen["timeout"] == _faust_resume._IDLE_POLL_SECONDS
    assert seen["max_records"] == 10
    assert isinstance(seen["active"], ActivePartitions)
    assert bool(seen["active"])  # never read as "every partition"
    asyncio.run(run(0.01))
    assert seen["timeout"] == 0.01


class IdleConsumer:
    """Faust's consumer with no partition active, as after a revoke or during the seek."""

    def __init__(self, flow_active: bool = True) -> None:
        self.flow_active = flow_active
        self.app = SimpleNamespace(client_only=False)
        self.active: set[TP] = set()
        self.slept: list[float] = []
        self.waited_for_flow = False
        self.can_resume_flow = asyncio.Event()

    def _get_active_partitions(self) -> set[TP]:
        return self.active

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.active.add(TOUCHPOINTS)  # resumed while it slept

    async def wait(self, event: asyncio.Event) -> None:
        self.waited_for_flow = True
        raise RuntimeError("stop here: Faust's own method was called")


def test_with_no_partition_active_the_consumer_looks_again_soon() -> None:
    consumer = IdleConsumer()
    records, active = asyncio.run(wait_next_records_promptly(consumer, 1.0))
    assert records == {}
    assert consumer.slept == [_faust_resume._IDLE_POLL_SECONDS]  # Faust's own sleeps 1 s
    assert active == {TOUCHPOINTS}  # the caller sees the partitions resumed meanwhile


def test_while_flow_is_stopped_fausts_own_wait_runs() -> None:
    consumer = IdleConsumer(flow_active=False)
    with pytest.raises(RuntimeError, match="Faust's own method"):
        asyncio.run(wait_next_records_promptly(consumer, 1.0))
    assert consumer.waited_for_flow
    assert consumer.slept == []


class ActiveConsumer(IdleConsumer):
    """Faust's consumer with a partition active, whose fetch returns `batches` in turn."""

    def __init__(self, *batches: dict[TP, list[Any]]) -> None:
        super().__init__()
        self.active.add(TOUCHPOINTS)
        self.not_waiting_next_records = asyncio.Event()
        self._batches = list(batches)

    async def _getmany(self, active_partitions: set[TP], timeout: float) -> Any:  # noqa: ASYNC109
        return self._batches.pop(0)


def test_each_fetch_notes_the_last_offset_it_returned() -> None:
    # the input horizon compares it with Faust's read offset (`_input_horizon`)
    fetched = [SimpleNamespace(offset=offset) for offset in (20, 21, 22)]
    consumer = ActiveConsumer({TOUCHPOINTS: fetched}, {})
    assert returned_offset(consumer, TOUCHPOINTS) is None
    records, _ = asyncio.run(wait_next_records_promptly(consumer, 1.0))
    assert [r.offset for r in records[TOUCHPOINTS]] == [20, 21, 22]
    assert returned_offset(consumer, TOUCHPOINTS) == 22
    asyncio.run(wait_next_records_promptly(consumer, 1.0))  # an empty fetch changes nothing
    assert returned_offset(consumer, TOUCHPOINTS) == 22
