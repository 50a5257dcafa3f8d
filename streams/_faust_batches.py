"""An agent's events in batches of what is queued, without Faust's per-event stream loop.

Faust's `Stream.take_events` fills its buffer from the stream's iterator, which sleeps(0)
once per event and runs the stream's processors per event, and then waits out its window
even when thousands of events are queued. Measured in the worker (B1, 20,000 queued events):
batches of ~28-44 events, one every ~30 ms, each waiting ~6-11 ms for its window; the agent's
input queue held 1,500 events that it could not get at.

`event_batches` reads the agent's channel queue itself: it waits for one event, then takes all
that are queued (up to `max_events`) at once. A busy worker so gets large batches, an idle
one answers an event as soon as it arrives. Per event it does the bookkeeping Faust's stream
iterator does (see `faust/_cython/streams.pyx`): an event of an old consumer generation or
while flow control is off is skipped; any other is tracked as unacked before the agent sees
it, and acked once the agent has finished its batch. A batch the agent fails on is not acked:
its records stay uncommitted and are read again.

Unlike Faust's iterator, a skipped event is not acked. Events are skipped only around a
rebalance, after the revoke dropped the partition's acks from Faust's books; an ack then puts
the unprocessed offset back into them (the books are defaultdicts), and if the partition comes
back to this worker, the seek to the committed offset reads the record again while its offset
already counts as acked. The commit could then pass it before it is processed a second time,
and a crash in between would lose it. Unacked, it is simply read again after the seek.

A batch is a `Batch`: while the agent waits for the acks of what its batch produced, it can
take the events that arrive meanwhile into the same batch (`Batch.more`), so that they are not
held up behind a wait for acks that is not theirs; they are tracked, and acked with the batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from streams._staging import Event

_WOKEN = object()

TakeMore = Callable[[Awaitable[Any], int], Awaitable[list[Event]]]


class Batch(list[Event]):
    """The events of one batch, in order; `more` takes in those that arrive while it waits."""

    def __init__(self, events: list[Event], take_more: TakeMore) -> None:
        super().__init__(events)
        self._take_more = take_more

    async def more(self, done: Awaitable[Any], limit: int) -> list[Event]:
        """The events queued now, or the first to arrive before `done` completes (none once it
        has and nothing is queued), at most `limit`: added to the batch, and acked with it."""
        if limit <= 0:
            return []
        taken = await self._take_more(done, limit)
        self.extend(taken)
        return taken


async def event_batches(
    stream: Any, max_events: int, wake: asyncio.Event | None = None
) -> AsyncIterator[list[Event]]:
    """Batches of the events queued for `stream`'s agent, as it iterates them.

    With `wake`, an agent waiting for events is also woken when `wake` is set, with an empty
    batch (the worker's agent then fires due timers, `_worker.Pipeline`); the event is cleared.
    """
    # iterating the channel subscribes a clone of it to the conductor, as a stream does
    channel = stream.channel.__aiter__()
    queue = channel.queue
    app = stream.app
    stopping: list[BaseException] = []

    async def take_more(done: Awaitable[Any], limit: int) -> list[Event]:
        try:
            first = await _next_or_done(queue, done)
        except StopAsyncIteration as stop:
            stopping.append(stop)  # the stream ends once this batch is done
            return []
        if first is _WOKEN:
            return []
        return _admit(app, _queued(queue, first, limit))

    while not stream.should_stop and not stopping:
        try:
            # raises what Faust threw into the channel (the queue's get does that too)
            first = await _next_or_woken(queue, wake)
        except StopAsyncIteration:
            # how Faust ends a stream when the worker stops; raised on from an async generator
            # it becomes a RuntimeError, logged as the agent crashing at every shutdown
            return
        if first is _WOKEN:
            yield Batch([], take_more)
            continue
        batch = Batch(_admit(app, _queued(queue, first, max_events)), take_more)
        if batch:
            yield batch
        for event in batch:
            await stream.ack(event)


def _queued(queue: Any, first: Any, limit: int) -> list[Any]:
    queued = [first]
    while len(queued) < limit and not queue.empty():
        queued.append(queue.get_nowait())
    return queued


def _admit(app: Any, queued: list[Any]) -> list[Event]:
    admitted = [event for event in queued if _admitted(app, event)]
    if admitted:
        _mark_inbound(app, admitted)
    return admitted


async def _next_or_done(queue: Any, done: Awaitable[Any]) -> Any:
    """The next queued event, or `_WOKEN` once `done` has completed and none is queued."""
    if not queue.empty():
        return await queue.get()
    waited = asyncio.ensure_future(done)
    if not waited.done():
        getter = asyncio.ensure_future(queue.get())
        try:
            await asyncio.wait((getter, waited), return_when=asyncio.FIRST_COMPLETED)
        finally:
            # a cancelled get leaves the queue as it was (asyncio.Queue hands the item on)
            getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
    return _WOKEN


async def _next_or_woken(queue: Any, wake: asyncio.Event | None) -> Any:
    """The next queued event, or `_WOKEN` when `wake` is set first (an empty queue only)."""
    if wake is None or not queue.empty():
        return await queue.get()
    if not wake.is_set():
        getter = asyncio.ensure_future(queue.get())
        woken = asyncio.ensure_future(wake.wait())
        try:
            await asyncio.wait((getter, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            # a cancelled get leaves the queue as it was (asyncio.Queue hands the item on)
            getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
    wake.clear()
    return _WOKEN


def _admitted(app: Any, event: Event) -> bool:
    """Track the event as Faust's stream iterator does; False for one it skips."""
    message = event.message
    if not app.flow_control.is_active() or message.generation_id != app.consumer_generation_id:
        return False
    if app.topics.acks_enabled_for(message.topic) and not message.tracked:
        message.tracked = True
        app.consumer.track_message(message)
    return True


def _mark_inbound(app: Any, batch: list[Event]) -> None:
    """Tell Faust's monitor that the stream is processing these partitions.

    Faust's stream iterator reports every event to the sensors; its consumer thread logs an
    error for each partition with records it fetched but no stream took in for
    `stream_processing_timeout` (5 minutes): every busy worker's log filled with "Stream has
    not started processing" after its first five minutes. Once per partition and batch is
    what that check needs, without the per-event cost of the sensors.
    """
    monitor = getattr(app, "monitor", None)
    if monitor is None:
        return
    now = time.monotonic()
    for tp in {event.message.tp for event in batch}:
        monitor.stream_inbound_time[tp] = now
