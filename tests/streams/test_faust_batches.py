"""An agent's events in batches of what is queued, with Faust's tracking and acks around them."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

import pytest

from streams._faust_batches import event_batches

GENERATION = 3


@dataclass(eq=False)
class Message:
    topic: str
    offset: int
    generation_id: int = GENERATION
    tracked: bool = False
    partition: int = 0

    @property
    def tp(self) -> tuple[str, int]:
        return (self.topic, self.partition)


@dataclass(eq=False)
class Event:
    message: Message


class Queue(asyncio.Queue[Event]):
    """As mode's ThrowableQueue: an error thrown in goes to a waiting get, or to the next one."""

    def __init__(self) -> None:
        super().__init__()
        self._errors: deque[BaseException] = deque()

    async def get(self) -> Event:
        if self._errors:
            raise self._errors.popleft()
        return await super().get()

    def throw(self, error: BaseException) -> None:
        waiters = self._getters  # type: ignore[attr-defined]
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
                return
        self._errors.append(error)


@dataclass
class Rig:
    """A stand-in for a Faust stream, its channel, app and consumer."""

    queue: Queue = field(default_factory=Queue)
    acked: list[int] = field(default_factory=list)
    tracked: list[int] = field(default_factory=list)
    flow_active: bool = True
    should_stop: bool = False
    inbound: dict[tuple[str, int], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rig = self
        self.channel = type("Channel", (), {"__aiter__": lambda _: self, "queue": self.queue})()
        self.app = type(
            "App",
            (),
            {
                "consumer_generation_id": GENERATION,
                "flow_control": type("Flow", (), {"is_active": lambda _: rig.flow_active})(),
                "topics": type("Topics", (), {"acks_enabled_for": lambda _, t: t != "noack"})(),
                "consumer": type(
                    "Consumer", (), {"track_message": lambda _, m: rig.tracked.append(m.offset)}
                )(),
                "monitor": type("Monitor", (), {"stream_inbound_time": rig.inbound})(),
            },
        )()

    async def ack(self, event: Event) -> None:
        self.acked.append(event.message.offset)

    def put(self, *offsets: int, topic: str = "touchpoints", generation: int = GENERATION) -> None:
        for offset in offsets:
            self.queue.put_nowait(Event(Message(topic, offset, generation)))


async def take(
    rig: Rig, count: int, max_events: int = 100, wake: asyncio.Event | None = None
) -> list[list[int]]:
    batches: list[list[int]] = []
    async for batch in event_batches(rig, max_events, wake):
        batches.append([event.message.offset for event in batch])
        assert not set(batches[-1]) & set(rig.acked)  # acked only after the agent's turn
        if len(batches) == count:
            break
    return batches


def test_all_queued_events_come_as_one_batch_and_are_acked_after_it() -> None:
    rig = Rig()
    rig.put(0, 1, 2, 3)
    batches = asyncio.run(take(rig, 1))
    assert batches == [[0, 1, 2, 3]]
    assert rig.tracked == [0, 1, 2, 3]


def test_faust_s_monitor_learns_which_partitions_the_stream_takes_in() -> None:
    # else Faust's consumer logs "Stream has not started processing" after five minutes
    rig = Rig()
    rig.put(0, 1)
    rig.put(5, topic="customers")
    before = time.monotonic()
    asyncio.run(take(rig, 1))
    assert set(rig.inbound) == {("touchpoints", 0), ("customers", 0)}
    assert all(before <= at <= time.monotonic() for at in rig.inbound.values())


def test_a_batch_holds_at_most_max_events() -> None:
    rig = Rig()
    rig.put(*range(5))

    async def run() -> list[list[int]]:
        return await take(rig, 3, max_events=2)

    assert asyncio.run(run()) == [[0, 1], [2, 3], [4]]
    assert rig.acked == [0, 1, 2, 3]  # the last batch is acked when the agent asks for more


def test_an_event_arriving_alone_is_a_batch_at_once() -> None:
    rig = Rig()

    async def run() -> list[list[int]]:
        asyncio.get_running_loop().call_later(0.01, rig.put, 7)
        return await asyncio.wait_for(take(rig, 1), 1)

    assert asyncio.run(run()) == [[7]]


def test_events_of_an_old_generation_are_skipped_and_not_acked() -> None:
    # an ack would count the unprocessed offset as done once the partition comes back here
    rig = Rig()
    rig.put(0, generation=GENERATION - 1)
    rig.put(1, 2)
    rig.put(3, generation=GENERATION - 1)
    rig.put(4)

    async def run() -> list[list[int]]:
        asyncio.get_running_loop().call_later(0.01, rig.put, 5)
        return await take(rig, 2)

    assert asyncio.run(run()) == [[1, 2, 4], [5]]
    assert rig.acked == [1, 2, 4]
    assert rig.tracked == [1, 2, 4, 5]


def test_no_event_is_taken_while_flow_control_is_off() -> None:
    rig = Rig(flow_active=False)
    rig.put(0, 1)

    async def run() -> list[list[int]]:
        asyncio.get_running_loop().call_later(0.05, setattr, rig, "flow_active", True)
        asyncio.get_running_loop().call_later(0.06, rig.put, 2)
        return await asyncio.wait_for(take(rig, 1), 1)

    assert asyncio.run(run()) == [[2]]
    assert rig.acked == []


def test_a_batch_the_agent_fails_on_is_not_acked() -> None:
    rig = Rig()
    rig.put(0, 1)

    async def run() -> None:
        async for _ in event_batches(rig, 10):
            raise RuntimeError("journey step failed")

    with pytest.raises(RuntimeError):
        asyncio.run(run())
    assert rig.acked == []


def test_topics_without_acks_are_not_tracked() -> None:
    rig = Rig()
    rig.put(0, topic="noack")
    assert asyncio.run(take(rig, 1)) == [[0]]
    assert rig.tracked == []


def test_an_error_thrown_into_the_channel_is_raised() -> None:
    rig = Rig()
    rig.queue.throw(KeyError("thrown"))
    with pytest.raises(KeyError):
        asyncio.run(take(rig, 1))


def test_an_error_thrown_into_a_waiting_channel_is_raised() -> None:
    rig = Rig()

    async def run() -> None:
        batches = asyncio.create_task(take(rig, 1))
        await asyncio.sleep(0.01)  # now waiting on the empty queue
        rig.queue.throw(KeyError("thrown"))
        await batches

    with pytest.raises(KeyError):
        asyncio.run(run())


def test_the_batches_end_when_faust_stops_the_stream() -> None:
    # Faust throws StopAsyncIteration into the channel when the worker stops; an async
    # generator that lets it out raises RuntimeError, which Faust logs as the agent crashing
    rig = Rig()
    rig.put(0, 1)

    async def run() -> list[list[int]]:
        batches = asyncio.create_task(take(rig, 3))
        await asyncio.sleep(0.01)  # the first batch is taken, the generator waits for more
        rig.queue.throw(StopAsyncIteration())
        return await asyncio.wait_for(batches, 1)

    assert asyncio.run(run()) == [[0, 1]]
    assert rig.acked == [0, 1]


def test_no_batch_when_the_stream_was_stopped_before_it_started() -> None:
    rig = Rig()
    rig.queue.throw(StopAsyncIteration())
    assert asyncio.run(take(rig, 1)) == []


def test_a_waiting_agent_is_woken_with_an_empty_batch() -> None:
    # the worker's agent then fires due timers
    rig = Rig()
    wake = asyncio.Event()

    async def run() -> list[list[int]]:
        batches = asyncio.create_task(take(rig, 4, wake=wake))
        await asyncio.sleep(0.01)  # waiting on the empty queue
        wake.set()
        await asyncio.sleep(0.01)
        rig.put(1, 2)
        await asyncio.sleep(0.01)
        wake.set()
        await asyncio.sleep(0.01)
        rig.put(3)
        return await asyncio.wait_for(batches, 1)

    assert asyncio.run(run()) == [[], [1, 2], [], [3]]
    assert not wake.is_set()  # cleared by the wake it caused
    assert rig.acked == [1, 2]
    assert rig.queue.empty()  # the gets given up at the wakes took nothing away


def test_queued_events_come_before_a_wake() -> None:
    rig = Rig()
    wake = asyncio.Event()
    rig.put(1, 2)
    wake.set()
    assert asyncio.run(take(rig, 2, wake=wake)) == [[1, 2], []]


def test_an_error_thrown_into_a_channel_waiting_with_a_wake_is_raised() -> None:
    rig = Rig()

    async def run() -> None:
        batches = asyncio.create_task(take(rig, 1, wake=asyncio.Event()))
        await asyncio.sleep(0.01)
        rig.queue.throw(KeyError("thrown"))
        await batches

    with pytest.raises(KeyError):
        asyncio.run(run())
