"""Faust's record delivery without a task per record, and still interruptible by a rebalance.

The patched `Consumer.wait_first` is called on a stand-in for Faust's consumer that has what
mode's own `wait_first` uses (its stop and crash events, its loop) and Faust's suspend event.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer

from streams._faust_drain import install_direct_delivery

install_direct_delivery()


def fake_consumer() -> Any:
    return SimpleNamespace(
        suspend_flow=asyncio.Event(),
        _stopped=asyncio.Event(),
        _crashed=asyncio.Event(),
        loop=asyncio.get_running_loop(),
    )


async def deliver(consumer: Any, delivery: Any) -> Any:
    # the very call Faust's `_drain_messages` makes for every fetched record
    return await Consumer.wait_first(consumer, delivery, consumer.suspend_flow.wait())


def test_a_delivery_into_a_buffer_with_room_makes_no_task() -> None:
    async def run() -> None:
        consumer = fake_consumer()
        buffer: asyncio.Queue[int] = asyncio.Queue(maxsize=2)
        tasks_before = len(asyncio.all_tasks())
        created: list[int] = []

        async def put() -> str:
            created.append(len(asyncio.all_tasks()))
            await buffer.put(1)
            return "delivered"

        result = await deliver(consumer, put())
        assert result.results == ["delivered"]
        assert not result.stopped
        assert buffer.qsize() == 1
        assert created == [tasks_before]  # it ran in the caller's task

    asyncio.run(run())


def test_a_delivery_that_must_wait_goes_on_when_the_buffer_drains() -> None:
    async def run() -> None:
        consumer = fake_consumer()
        buffer: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        buffer.put_nowait(0)

        async def put() -> str:
            await buffer.put(1)
            return "delivered"

        waiting = asyncio.ensure_future(deliver(consumer, put()))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        assert buffer.get_nowait() == 0
        result = await asyncio.wait_for(waiting, 1)
        assert "delivered" in result.results
        assert buffer.get_nowait() == 1

    asyncio.run(run())


def test_a_rebalance_interrupts_a_delivery_blocked_on_a_full_buffer() -> None:
    async def run() -> None:
        consumer = fake_consumer()
        buffer: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        buffer.put_nowait(0)
        waiting = asyncio.ensure_future(deliver(consumer, buffer.put(1)))
        await asyncio.sleep(0.01)
        consumer.suspend_flow.set()
        await asyncio.wait_for(waiting, 1)
        buffer.get_nowait()
        await asyncio.sleep(0.01)
        assert buffer.empty()  # the interrupted put was cancelled, not completed later

    asyncio.run(run())


def test_while_the_flow_is_suspended_faust_decides_as_before() -> None:
    async def run() -> None:
        consumer = fake_consumer()
        consumer.suspend_flow.set()
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        result = await asyncio.wait_for(deliver(consumer, never), 1)
        assert result.results == [True]  # the suspend event won
        assert never.cancelled()

    asyncio.run(run())


def test_a_failing_delivery_raises_to_the_fetcher() -> None:
    async def run() -> None:
        async def broken() -> None:
            raise ValueError("cannot decode")

        with pytest.raises(ValueError, match="cannot decode"):
            await deliver(fake_consumer(), broken())

    asyncio.run(run())
