"""How far in time the worker has handled its touchpoints: a due timer fires only up to there.

A due timer's `timer.fired` record goes to the end of its customer's partition. An earlier
touchpoint of that customer still unprocessed (a backlog after a rebalance or a restart, or a
worker that falls behind) is then processed after the timer, and the timer acts on a state that
misses it. The rebalance test (tests/integration/test_rebalance.py) caught one: a worker took a
partition over, its rebuilt index held a cart reminder already due, and the reminder went out
although the customer's order, placed right after the cart, was waiting in the touchpoints
backlog that worker had not read yet.

The horizon is the earliest of, over the touchpoints partitions this worker holds: now, for a
partition processed to its end; else the timestamp of the last record of it the agent processed
(minus infinity before the first). Timers due after the horizon wait for it. Processed, not only
fetched: the identity step sends a touchpoint on through the customer topic when its customer
has a record there still unread (a `timer.fired` among them), so a touchpoint fetched before the
timer fired can still land behind it.

A partition is processed to its end when the last record the agent processed is the one before
the end, when the committed offset has reached the end (every record before it was processed,
here or by the worker that held the partition before), or when the consumer has handed on
everything to the end and the agent has processed the last record handed on (the end of a
partition that a transactional producer writes is a marker, which no record reaches). Handed
on means all that the fetches returned: Faust hands a fetch's records to the agents a hundred at
a time, and the agent, which looks for due timers after each batch, can have caught up with the
first hundred while the fetch's position is already at the end.

Only the touchpoints: the identity and customer topics are the workers' own output read back.
They lag while a worker works through a backlog because it writes them as it goes, and would
hold the timers back by that; what they already carry was caused by touchpoints this horizon
covers.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from streams._staging import Event


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    """One touchpoints partition: its end, and how far the consumer and the agent have got."""

    highwater: int | None  # from the last fetch response; None before the first
    committed: int | None  # the group's committed offset, as this worker last committed it
    position: int | None  # the next offset the consumer hands on; None while unknown
    handed: int | None  # the last offset handed on, or the one a seek set (Faust's read offset)
    processed: int | None  # the last offset the agent processed since the rebalance
    last_timestamp: float | None  # of that record, epoch seconds
    # the last offset a fetch returned to Faust: after `handed`, records still being handed on
    returned: int | None = None


def input_horizon(now: float, partitions: Iterable[PartitionProgress]) -> float:
    """The time up to which every record of `partitions` has been handled."""
    horizon = now
    for partition in partitions:
        if processed_to_the_end(partition):
            continue
        last = partition.last_timestamp
        horizon = min(horizon, last if last is not None else -math.inf)
    return horizon


def processed_to_the_end(partition: PartitionProgress) -> bool:
    end, processed, handed = partition.highwater, partition.processed, partition.handed
    if end is None:
        return False
    if processed is not None and processed + 1 >= end:
        return True
    if partition.committed is not None and partition.committed >= end:
        return True
    if partition.position is None or partition.position < end:
        return False  # records before the end not handed on yet
    if partition.returned is not None and (handed is None or handed < partition.returned):
        # Faust hands a fetch's records on a hundred at a time, letting the agent run in
        # between: the agent can have caught up with what was handed on so far
        return False
    # everything handed on: processed too, or nothing handed since a seek to the end
    return handed is None or handed >= end or handed == processed


class InputProgress:
    """The last record the agent processed per touchpoints partition, since the last rebalance.

    `held()`: the touchpoints partitions this worker holds; `highwater(tp)`: a partition's end
    from the last fetch; `committed(tp)`: its committed offset; `position(tp)`: the next offset
    the consumer hands on; `handed(tp)`: the last offset it handed on (or the one a seek set);
    `returned(tp)`: the last offset a fetch returned to Faust, which hands them on in turn.
    """

    def __init__(
        self,
        held: Callable[[], Iterable[Any]],
        highwater: Callable[[Any], int | None],
        committed: Callable[[Any], int | None],
        position: Callable[[Any], Awaitable[int | None]],
        handed: Callable[[Any], int | None],
        returned: Callable[[Any], int | None] = lambda _tp: None,
    ) -> None:
        self._held = held
        self._highwater = highwater
        self._committed = committed
        self._position = position
        self._handed = handed
        self._returned = returned
        self._last: dict[Any, tuple[int, float]] = {}

    def processed(self, events: Sequence[Event]) -> None:
        for event in events:
            message = event.message
            self._last[message.tp] = (message.offset, message.timestamp)

    def forget(self) -> None:
        """At a rebalance: a partition kept may be read again from an earlier offset."""
        self._last.clear()

    async def horizon(self, now: float) -> float:
        partitions = [await self._progress(tp) for tp in self._held()]
        return input_horizon(now, partitions)

    async def _progress(self, tp: Any) -> PartitionProgress:
        offset, timestamp = self._last.get(tp, (None, None))
        progress = PartitionProgress(
            self._highwater(tp),
            self._committed(tp),
            None,
            self._handed(tp),
            offset,
            timestamp,
            self._returned(tp),
        )
        if processed_to_the_end(progress):
            return progress  # the position, a call into the consumer's thread, cannot matter
        return replace(progress, position=await self._position(tp))
