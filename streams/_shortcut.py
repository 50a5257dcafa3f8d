"""The identity step's shortcut: a touchpoint already keyed by its customer skips a topic.

The identity step forwards each resolved touchpoint to the customer topic, where the journey
step reads it again: a produce, an ack, a fetch and Faust's per-record path, once more for
every event. When the record is keyed by its canonical customer and sits on the partition the
customer topic would put it on, its journey state lives in this very partition, so the journey
step can take it at once, in the same batch and the same event context.

That is only right while it cannot overtake anything: the customer topic's partition may hold
records for the same customer that came before it (an event forwarded under an alias, a fired
timer, a merge). So the shortcut is taken only when this worker has read that partition up to
its fetch highwater and everything it sent there itself: after a rebalance, a partition takes
the topic again until one of its records has been read.
"""

from __future__ import annotations

import functools
import heapq
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any

from aiokafka.partitioner import murmur2
from faust.types import Message

from schemas import Touchpoint
from streams._metrics import WorkerMetrics
from streams._staging import Outbox

# an offset of the customer topic's partition, None when not known
Highwater = Callable[[int], int | None]
HandleTouchpoint = Callable[[Message, Touchpoint], Awaitable[None]]


# aiokafka's murmur2 is pure Python (~4 µs a key); a worker asks for the same customers' keys
# again and again, up to three times per event
@functools.lru_cache(maxsize=65_536)
def partition_for(key: bytes, partitions: int) -> int:
    """The partition the Java client's default partitioner (and aiokafka's) picks for `key`."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


class Backlog:
    """What of the customer topic this worker has not read yet: its own records there, by
    customer, and how many records of other writers each partition holds before its highwater.
    """

    def __init__(self, highwater: Highwater, start: Highwater) -> None:
        """`highwater(p)`: the customer topic's, from the last fetch; `start(p)`: where the
        consumer began reading `p` (its committed offset), until this worker reads a record."""
        self._highwater = highwater
        self._start = start
        self._epoch = 0
        self._in_flight: Counter[bytes] = Counter()
        self._unread: Counter[bytes] = Counter()
        # per partition, this worker's acked records not read yet: a heap of (offset, key)
        self._own: dict[int, list[tuple[int, bytes]]] = {}
        self._next_read: dict[int, int] = {}
        # the customer topic's partitions assigned to this worker in this epoch, None until
        # Faust says: only those are read here, so only sends to them stay booked (the
        # others would never be read, and stay booked until the next rebalance)
        self._held: frozenset[int] | None = None

    def hold(self, partitions: Iterable[int]) -> None:
        """Faust assigned these partitions of the customer topic: forget sends to the others.

        Until this is known, every send is booked: a send booked in vain costs memory until
        here, a send not booked could be overtaken by a direct event of the same customer.
        """
        self._held = frozenset(partitions)
        for partition in [p for p in self._own if p not in self._held]:
            for _, key in self._own.pop(partition):
                self._unbook(key)

    def sending(self, key: bytes) -> int:
        """A send of `key` begins; the token to hand back to `sent`."""
        self._in_flight[key] += 1
        return self._epoch

    def sent(self, key: bytes, partition: int, offset: int | None, token: int) -> None:
        """A send finished: acked at `offset`, or failed (None)."""
        self._in_flight[key] -= 1
        if not self._in_flight[key]:
            del self._in_flight[key]
        if offset is None or token != self._epoch:
            return  # a failed record, if it was written after all, counts as another writer's
        if self._held is not None and partition not in self._held:
            return  # another worker reads it
        if offset >= self._next_read.get(partition, 0):
            heapq.heappush(self._own.setdefault(partition, []), (offset, key))
            self._unread[key] += 1

    def read(self, partition: int, offset: int) -> None:
        self._next_read[partition] = offset + 1
        own = self._own.get(partition)
        while own and own[0][0] <= offset:
            _, key = heapq.heappop(own)
            self._unbook(key)

    def _unbook(self, key: bytes) -> None:
        self._unread[key] -= 1
        if not self._unread[key]:
            del self._unread[key]

    def forget(self) -> None:
        """A rebalance: what was read before says nothing about the partitions now held."""
        self._epoch += 1
        self._held = None
        self._next_read.clear()
        self._own.clear()
        self._unread.clear()

    def is_clear(self, partition: int, key: bytes) -> bool:
        """Nothing for `key` is waiting in the partition, as far as this worker can know."""
        if key in self._in_flight or key in self._unread:
            return False
        highwater = self._highwater(partition)
        if highwater is None:
            return False
        next_read = self._next_read.get(partition)
        if next_read is None:
            # nothing read since the partition was assigned: an empty partition, or one read
            # from its committed offset, which is an offset already read if it was moved
            next_read = 0 if highwater == 0 else self._start(partition)
            if next_read is None:
                return False
        unread = highwater - next_read
        own = self._own.get(partition, ())
        return unread <= 0 or unread == sum(1 for offset, _ in own if offset < highwater)


class TrackedTopic:
    """The customer topic, for sending: each record's partition is chosen here and booked."""

    def __init__(self, topic: Any, partitions: int, backlog: Backlog) -> None:
        self._topic = topic
        self._partitions = partitions
        self._backlog = backlog

    async def send(
        self,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any:
        partition = partition_for(key, self._partitions)
        token = self._backlog.sending(key)
        try:
            future = await self._topic.send(
                key=key, value=value, headers=headers, partition=partition
            )
        except BaseException:
            self._backlog.sent(key, partition, None, token)
            raise
        future.add_done_callback(partial(self._acked, key, partition, token))
        return future

    def _acked(self, key: bytes, partition: int, token: int, future: Any) -> None:
        failed = future.cancelled() or future.exception() is not None
        offset = None if failed else int(future.result().offset)
        self._backlog.sent(key, partition, offset, token)


class Shortcut:
    """Delivers a resolved touchpoint: to the journey step at once when it may, else the topic."""

    def __init__(
        self,
        handle: HandleTouchpoint,
        backlog: Backlog,
        customer_topic: TrackedTopic,
        partitions: int,
        outbox: Outbox,
        metrics: WorkerMetrics,
    ) -> None:
        self._handle = handle
        self._backlog = backlog
        self._customers = customer_topic
        self._partitions = partitions
        self._outbox = outbox
        self._direct = metrics.forwarded.labels("direct")
        self._via_topic = metrics.forwarded.labels("topic")

    async def deliver(
        self, canonical: bytes, raw: bytes, message: Message, event: Touchpoint
    ) -> None:
        if self.applies(canonical, message):
            self._direct.inc()
            await self._handle(message, event)
        else:
            self._via_topic.inc()
            await self._outbox.send(self._customers, canonical, raw)

    def applies(self, canonical: bytes, message: Message) -> bool:
        return (
            message.key == canonical
            and message.partition == partition_for(canonical, self._partitions)
            and self._backlog.is_clear(message.partition, canonical)
        )
