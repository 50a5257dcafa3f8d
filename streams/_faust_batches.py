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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from streams._staging import Event

_WOKEN = object()


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
    while not stream.should_stop:
        try:
            # raises what Faust threw into the channel (the queue's get does that too)
            first = await _next_or_woken(queue, wake)
        except StopAsyncIteration:
            # how Faust ends a stream when the worker stops; raised on from an async generator
            # it becomes a RuntimeError, logged as the agent crashing at every shutdown
            return
        if first is _WOKEN:
            yield []
            continue
        queued = [first]
        while len(queued) < max_events and not queue.empty():
            queued.append(queue.get_nowait())
        batch = [event for event in queued if _admitted(app, event)]
        if batch:
            _mark_inbound(app, batch)
            yield batch
        for event in batch:
            await stream.ack(event)


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
