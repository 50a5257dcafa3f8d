"""Batch staging for the agents: sends in flight together, table writes held until they are acked.

An agent processes a batch of events (`_faust_batches.event_batches`): every record it
produces for them goes out at once, and the new state is written only after the broker has
acked them all. A
crash before that point replays the whole batch from the old state and yields the same records
(deterministic ids, which senders dedupe); Faust acks the batch's offsets only after the agent
has finished it, and commits only after its producer and the worker's are flushed (see
`_faust_flush`, `_client_producer`).

Faust's RocksDB store picks the partition database from the *current event* for reads and
writes alike, so each staged write remembers the event that made it: it is written to that
event's partition (`TableWriter`, or Faust's table in that event's context).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Protocol

from faust import streams as faust_streams
from faust.types import EventT, Message
from rocksdict import WriteBatch

log = logging.getLogger("polku.worker")

Event = EventT[Any]
SetEvent = Callable[[Event | None], None]

_DELETED = None


def set_current_event(event: Event | None) -> None:
    """Make `event` the current event of this task only, as Faust's stores and tables read it.

    Not `Stream._set_current_event`: that also sets the stream's shared `current_event`
    attribute, from which `take_events`' background reader takes the event it buffers, so
    it would buffer one of ours instead of the record it just read.
    """
    faust_streams._current_event.set(weakref.ref(event) if event is not None else None)


class Outbox:
    """Records produced for the current batch; `settle` waits for the broker's acks."""

    def __init__(
        self,
        waited: Callable[[float], None] | None = None,
        send_now: Callable[[], None] | None = None,
    ) -> None:
        """`waited(seconds)`: told how long each `settle` took. `send_now()`: has the producer
        send what it holds back at once, without waiting (`ClientProducer.send_now`)."""
        self._pending: list[Awaitable[Any]] = []
        self._waited = waited
        self._send_now = send_now

    async def send(
        self,
        topic: Any,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        # `send` returns once the record is queued in the client; the ack comes with `settle`
        self._pending.append(await topic.send(key=key, value=value, headers=headers))

    def __len__(self) -> int:
        return len(self._pending)

    async def settle(self, at_once: bool = True) -> None:
        """Wait for the acks of the batch's records; `at_once`: without the producer's linger.

        Not at once, the records go out as the producer gathers them (`linger.ms`): for a
        worker working through a backlog, fewer and larger requests, which leave the broker
        and the worker's own client more of the machine's CPU.
        """
        pending, self._pending = self._pending, []
        if not pending:
            return
        started = time.perf_counter()
        if at_once and self._send_now is not None:
            self._send_now()
        await asyncio.gather(*pending)
        if self._waited is not None:
            self._waited(time.perf_counter() - started)


class StagedTable:
    """A Faust table as the batch in progress sees it; `apply` writes the batch's changes."""

    def __init__(self, table: Any, writer: TableWriter | None = None) -> None:
        """`writer` writes the saved changes past Faust's per-write path (see `TableWriter`)."""
        self.table = table
        self.event: Event | None = None
        self._writes: dict[bytes, tuple[bytes | None, Event | None]] = {}
        self._read = partition_reader(table)
        self._read_in = partition_reader_by_number(table)
        self._writer = writer

    def get(self, key: bytes) -> bytes | None:
        if key in self._writes:
            return self._writes[key][0]
        return self._read(key, self.event)

    def changed(self, key: bytes) -> bool:
        """Whether the batch in progress has changed `key` (not yet written)."""
        return key in self._writes

    def stored(self, key: bytes, partition: int) -> bytes | None:
        """What the table holds for `key` in `partition`, whatever event is current."""
        return self._read_in(key, partition)

    def __contains__(self, key: bytes) -> bool:
        return self.get(key) is not None

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._writes[key] = (value, self.event)

    def __delitem__(self, key: bytes) -> None:
        self._writes[key] = (_DELETED, self.event)

    async def apply(self, set_event: SetEvent) -> None:
        """Write the staged changes to the table, each in the context of its own event."""
        writes, self._writes = self._writes, {}
        if self._writer is not None and writes:
            await self._writer.write(
                [(_partition_of(event), key, value) for key, (value, event) in writes.items()]
            )
            return
        for key, (value, event) in writes.items():
            set_event(event)
            if value is not None:
                self.table[key] = value
            elif self._read(key, event) is not None:
                del self.table[key]  # a tombstone in the changelog

    def discard(self) -> None:
        self._writes.clear()


def _plain_rocksdb(table: Any) -> bool:
    """A partitioned table on Faust's RocksDB store, raw keys and values: every table here."""
    store = getattr(table, "data", None)
    return (
        hasattr(store, "_db_for_partition")
        and hasattr(store, "offset_key")
        and getattr(table, "key_serializer", None) == "raw"
        and getattr(table, "value_serializer", None) == "raw"
        and not getattr(table, "is_global", True)
        and not getattr(table, "use_partitioner", True)
    )


def table_writer(table: Any, producer: Callable[[], Any] | None) -> TableWriter | None:
    """A `TableWriter` for `table`, or None (Faust's own path) without a producer or when it
    is not a plain RocksDB table."""
    return TableWriter(table, producer) if producer and _plain_rocksdb(table) else None


def _partition_of(event: Event | None) -> int:
    if event is None:
        raise RuntimeError("a table write outside an event: its partition is not known")
    return int(event.message.partition)


class TableWriter:
    """Writes a batch's changes to a partitioned RocksDB table the way Faust's table does, in
    one pass: the partition's database, the changelog record, and the persisted offset.

    Faust writes one key at a time through its mapping layers, `send_soon` and its producer
    buffer, and on each changelog ack stores the record's offset in the partition's database.
    Measured in B1 (1.8 table writes per event): the worker ran at 1.7-2.2k events/s with its
    table writes left out, against ~1.0k with them, so a write cost ~200 µs there. Here the
    values go into the database directly, one write batch per partition (`_PartitionWrites`),
    the changelog records to the worker's producer
    (Faust's flush before a commit waits for them too), and each partition's offset is
    stored once per batch, from the ack of its last record: what recovery replays from there
    on is the same records, applied again to the same values.
    """

    def __init__(self, table: Any, producer: Callable[[], Any]) -> None:
        """`producer()`: the worker's `ClientProducer`, whose flush Faust's flush before a
        commit waits for (`_client_producer.install_client_producer`)."""
        store = table.data
        self._table = table
        self._database_of = store._db_for_partition
        self._offset_key = store.offset_key
        self._producer = producer

    async def write(self, writes: Sequence[tuple[int, bytes, bytes | None]]) -> None:
        """Write each (partition, key, value or None for a delete), in order."""
        changelog = self._table.changelog_topic.get_topic_name()
        producer = self._producer()
        batches: dict[int, _PartitionWrites] = {}
        last_sent: dict[int, asyncio.Future[Any]] = {}
        for partition, key, value in writes:
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = _PartitionWrites(self._database_of(partition))
            if not batch.stage(key, value):
                continue  # nothing to delete: no tombstone, as Faust's table
            sent = await producer.send(changelog, key, value, partition)
            sent.add_done_callback(functools.partial(_report_failure, changelog, partition))
            last_sent[partition] = sent
        for batch in batches.values():
            batch.write()
        for partition, sent in last_sent.items():
            sent.add_done_callback(functools.partial(self._persisted, partition))

    def _persisted(self, partition: int, sent: asyncio.Future[Any]) -> None:
        if sent.cancelled() or sent.exception() is not None:
            return  # recovery then replays from the offset stored before: the same records
        offset = str(sent.result().offset).encode()
        self._database_of(partition).put(self._offset_key, offset)


class _PartitionWrites:
    """A batch's writes to one partition's database, written at once (`write`).

    One RocksDB write batch: one write-ahead-log append for the batch instead of one per key
    (a put of a 3.4 KB state ~12-17 µs alone, ~9-11 µs in a batch of 1,000, measured here
    with Faust's store options), and the partition's states land together or not at all.
    """

    def __init__(self, database: Any) -> None:
        self._database = database
        self._batch = WriteBatch(raw_mode=True)
        self._staged: dict[bytes, bytes | None] = {}

    def stage(self, key: bytes, value: bytes | None) -> bool:
        """Stage a put, or a delete (None); False for a delete of a key not held."""
        if value is None and not self._holds(key):
            return False
        if value is None:
            self._batch.delete(key)
        else:
            self._batch.put(key, value)
        self._staged[key] = value
        return True

    def _holds(self, key: bytes) -> bool:
        if key in self._staged:
            return self._staged[key] is not None
        return self._database.get(key) is not None

    def write(self) -> None:
        if self._staged:
            self._database.write(self._batch)


def _report_failure(changelog: str, partition: int, sent: asyncio.Future[Any]) -> None:
    # the client has given up retrying: the value is in this worker's database but not in the
    # changelog, so another worker restoring the partition would not have it (as with Faust's
    # own changelog sends, which fail the same way); say so rather than lose it silently
    if not sent.cancelled() and sent.exception() is not None:
        log.error(
            "changelog record not written to %s[%s]: %s", changelog, partition, sent.exception()
        )


def partition_reader(table: Any) -> Callable[[bytes, Event | None], bytes | None]:
    """Reads a key of a table as Faust would in `event`'s context, without Faust's layers.

    A Faust table read passes the table's mapping layers, the store's serializer and its
    key-to-partition cache (a locked LRU) before it reaches RocksDB: ~10 % of the worker's time
    in B1, at three reads per event. For a partitioned RocksDB table with raw keys (every
    table here), Faust's own read in an event's context is exactly a get on the database of
    the event's partition, which this does directly; any other read goes through Faust.
    """

    def through_faust(key: bytes, _event: Event | None) -> bytes | None:
        return _through_faust(table, key)

    if not _plain_rocksdb(table):
        return through_faust
    database_of = table.data._db_for_partition

    def direct(key: bytes, event: Event | None) -> bytes | None:
        if event is None:
            return through_faust(key, event)
        stored = database_of(event.message.partition).get(key)
        return bytes(stored) if stored is not None else None

    return direct


def stored_items(table: Any) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of the table's active partitions, as stored.

    Faust's `items()` passes each pair through the store's serializers, ~3.4 µs a pair here,
    and a recovery reads every state of the worker's partitions (a million on a large one).
    For a plain RocksDB table (raw keys and values) those serializers return the stored bytes
    unchanged, so its store's own iteration, which Faust's `items()` decodes, is read directly.
    """
    if not _plain_rocksdb(table):
        return ((key, bytes(value)) for key, value in table.items())
    items: Iterator[tuple[bytes, bytes]] = table.data._iteritems()
    return items


def partition_reader_by_number(table: Any) -> Callable[[bytes, int], bytes | None]:
    """Reads a key of a table in a partition given by its number.

    Outside an event's processing (a timer falls due): Faust's own read would take the
    partition of whatever event is current in the task, which in the agent's task is the last
    one of the batch before.
    """
    if not _plain_rocksdb(table):
        return lambda key, _partition: _through_faust(table, key)
    database_of = table.data._db_for_partition

    def direct(key: bytes, partition: int) -> bytes | None:
        stored = database_of(partition).get(key)
        return bytes(stored) if stored is not None else None

    return direct


def _through_faust(table: Any, key: bytes) -> bytes | None:
    stored = table.get(key)
    return bytes(stored) if stored is not None else None


class BatchStage(Protocol):
    """A step whose table writes a batch stages and saves together (see `process_batch`)."""

    outbox: Outbox

    def begin(self, event: Event) -> None:
        """Stage the writes that follow under `event`."""

    def discard(self) -> None:
        """Forget the staged writes: the batch will be processed again."""

    async def save(self, set_event: SetEvent) -> None:
        """Write the staged changes; the batch's records have all been acked."""


def _always() -> bool:
    return True


async def process_batch(
    events: Sequence[Event],
    set_event: SetEvent,
    stages: Sequence[BatchStage],
    handle: Callable[[Message], Awaitable[None]],
    keep: Callable[[], bool] = _always,
    at_once: bool = True,
) -> bool:
    """Handle every event, wait for the acks of all they produced, and only then save.

    `keep()` is asked once the acks are in: when it no longer holds (a rebalance has taken the
    partitions away), nothing is saved and the result is False. `at_once`: see `Outbox.settle`.
    """
    try:
        for event in events:
            set_event(event)
            for stage in stages:
                stage.begin(event)
            await handle(event.message)
        for stage in stages:
            await stage.outbox.settle(at_once)
    except BaseException:
        for stage in stages:
            stage.discard()
        raise
    if not keep():
        for stage in stages:
            stage.discard()
        return False
    for stage in stages:
        await stage.save(set_event)
    return True
