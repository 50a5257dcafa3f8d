"""The identity step's shortcut: when a touchpoint may skip the customer topic, and when not."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from streams._metrics import WorkerMetrics
from streams._shortcut import Backlog, Shortcut, TrackedTopic, partition_for
from streams._staging import Outbox

PARTITIONS = 4


@pytest.mark.parametrize("key", [b"c1", b"c4711", b"aino@example.com", b"x" * 37, b""])
def test_partition_for_is_the_java_and_aiokafka_default_partitioner(key: bytes) -> None:
    assert partition_for(key, PARTITIONS) == DefaultPartitioner()(
        key, list(range(PARTITIONS)), list(range(PARTITIONS))
    )


@dataclass
class Partition:
    """The customer topic's partition as the worker's consumer sees it."""

    highwater: int | None = None
    start: int | None = None


def backlog(partition: Partition) -> Backlog:
    return Backlog(highwater=lambda _: partition.highwater, start=lambda _: partition.start)


def test_nothing_is_clear_before_a_fetch_has_told_the_highwater() -> None:
    assert not backlog(Partition(highwater=None, start=0)).is_clear(0, b"aino")


def test_an_empty_partition_is_clear_before_anything_was_read() -> None:
    assert backlog(Partition(highwater=0)).is_clear(0, b"aino")


def test_before_a_read_the_committed_offset_stands_for_what_was_read() -> None:
    partition = Partition(highwater=12, start=12)
    books = backlog(partition)
    assert books.is_clear(0, b"aino")
    partition.start = 10  # two records nobody has processed yet
    assert not books.is_clear(0, b"aino")
    partition.start = None
    assert not books.is_clear(0, b"aino")


def test_a_customer_with_a_record_in_flight_or_unread_waits_others_do_not() -> None:
    partition = Partition(highwater=5)
    books = backlog(partition)
    books.read(0, 4)
    token = books.sending(b"aino")
    assert not books.is_clear(0, b"aino")
    assert books.is_clear(0, b"eero")  # once in the log, the highwater shows it (below)
    books.sent(b"aino", 0, 5, token)
    partition.highwater = 6
    assert not books.is_clear(0, b"aino")
    assert books.is_clear(0, b"eero")  # the only unread record is the worker's own, for aino
    books.read(0, 5)
    assert books.is_clear(0, b"aino")


def test_another_writers_unread_record_holds_every_customer() -> None:
    partition = Partition(highwater=7)
    books = backlog(partition)
    books.read(0, 4)
    token = books.sending(b"aino")
    books.sent(b"aino", 0, 5, token)
    # offsets 5 (own) and 6 (someone else's: an event forwarded by another worker)
    assert not books.is_clear(0, b"eero")
    books.read(0, 5)
    assert not books.is_clear(0, b"eero")
    books.read(0, 6)
    assert books.is_clear(0, b"eero")


def test_own_records_beyond_a_stale_highwater_are_not_counted_as_unread() -> None:
    partition = Partition(highwater=5)
    books = backlog(partition)
    books.read(0, 4)
    for offset in (5, 6):
        books.sent(b"aino", 0, offset, books.sending(b"aino"))
    # the last fetch was before both: nothing else is known to be there
    assert books.is_clear(0, b"eero")
    partition.highwater = 8  # 5 and 6 are ours, 7 is not
    assert not books.is_clear(0, b"eero")


def test_a_failed_send_frees_the_customer_and_its_record_would_count_as_foreign() -> None:
    partition = Partition(highwater=5)
    books = backlog(partition)
    books.read(0, 4)
    books.sent(b"aino", 0, None, books.sending(b"aino"))
    assert books.is_clear(0, b"aino")
    partition.highwater = 6  # it was written after all
    assert not books.is_clear(0, b"aino")


def test_a_rebalance_forgets_what_was_read_and_acks_that_were_on_the_way() -> None:
    partition = Partition(highwater=5, start=None)
    books = backlog(partition)
    books.read(0, 4)
    token = books.sending(b"aino")
    books.forget()
    assert not books.is_clear(0, b"eero")  # nothing read since the rebalance
    books.sent(b"aino", 0, 5, token)  # acked after the rebalance: no longer booked as own
    books.read(0, 4)
    partition.highwater = 6
    assert not books.is_clear(0, b"eero")
    books.read(0, 5)
    assert books.is_clear(0, b"aino")


def test_sends_are_booked_until_the_assignment_is_known_then_only_to_held_partitions() -> None:
    partition = Partition(highwater=0)
    books = backlog(partition)
    books.sent(b"aino", 0, 0, books.sending(b"aino"))
    books.sent(b"eero", 1, 0, books.sending(b"eero"))  # before the assignment: booked too
    assert not books.is_clear(0, b"aino")
    assert not books.is_clear(1, b"eero")
    books.hold([0])  # another worker reads partition 1: its book would never empty
    assert not books.is_clear(0, b"aino")
    assert books.is_clear(1, b"eero")
    books.sent(b"eero", 1, 1, books.sending(b"eero"))
    assert books.is_clear(1, b"eero")
    books.forget()  # the next epoch's assignment is not known yet: book everything again
    partition.highwater = 2
    books.read(1, 1)
    books.sent(b"eero", 1, 2, books.sending(b"eero"))
    assert not books.is_clear(1, b"eero")


def test_a_customer_in_flight_waits_even_on_a_partition_another_worker_holds() -> None:
    books = backlog(Partition(highwater=0))
    books.hold([0])
    token = books.sending(b"eero")
    assert not books.is_clear(1, b"eero")
    books.sent(b"eero", 1, 0, token)
    assert books.is_clear(1, b"eero")


class FakeFaustTopic:
    """Acks every send at the next offset of its partition."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, int]] = []
        self.ends: dict[int, int] = {}

    async def send(self, **kwargs: Any) -> asyncio.Future[Any]:
        partition = kwargs["partition"]
        offset = self.ends.get(partition, 0)
        self.ends[partition] = offset + 1
        self.sent.append((kwargs["key"], partition))
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        ack.set_result(SimpleNamespace(offset=offset))
        return ack


def test_the_tracked_topic_picks_the_partition_and_books_the_ack() -> None:
    partition = Partition(highwater=0)
    books = backlog(partition)
    topic = FakeFaustTopic()
    tracked = TrackedTopic(topic, PARTITIONS, books)

    async def send() -> None:
        future = await tracked.send(b"aino", b"{}")
        assert not books.is_clear(partition_for(b"aino", PARTITIONS), b"aino")
        await future

    asyncio.run(send())
    target = partition_for(b"aino", PARTITIONS)
    assert topic.sent == [(b"aino", target)]
    partition.highwater = 1
    books.read(target, -1)  # nothing of it read yet
    assert not books.is_clear(target, b"aino")
    assert books.is_clear(target, b"eero")
    books.read(target, 0)
    assert books.is_clear(target, b"aino")


@dataclass
class Message:
    key: bytes
    partition: int
    topic: str = "touchpoints"
    offset: int = 0
    headers: list[Any] = field(default_factory=list)


def read(key: bytes, partition: int) -> Any:
    """A touchpoints record as Faust hands it to the identity step."""
    return Message(key, partition)


def test_the_shortcut_takes_only_canonical_keys_on_their_own_partition() -> None:
    handled: list[bytes] = []
    topic = FakeFaustTopic()
    books = backlog(Partition(highwater=0))
    metrics = WorkerMetrics()
    outbox = Outbox()
    tracked = TrackedTopic(topic, PARTITIONS, books)

    async def handle(message: Any, _event: Any) -> None:
        handled.append(message.key)

    shortcut = Shortcut(handle, books, tracked, PARTITIONS, outbox, metrics)
    home = partition_for(b"aino", PARTITIONS)
    elsewhere = (home + 1) % PARTITIONS

    async def deliver() -> None:
        event: Any = None
        await shortcut.deliver(b"aino", b"{}", read(b"aino", home), event)
        # resolved from an alias: the customer's state lives on the customer's partition
        await shortcut.deliver(b"aino", b"{}", read(b"cookie-1", home), event)
        # a channel that partitions differently: same key, another partition
        await shortcut.deliver(b"aino", b"{}", read(b"aino", elsewhere), event)
        await outbox.settle()

    asyncio.run(deliver())
    assert handled == [b"aino"]
    assert [key for key, _ in topic.sent] == [b"aino", b"aino"]
    assert metrics.forwarded.labels("direct")._value.get() == 1
    assert metrics.forwarded.labels("topic")._value.get() == 2
