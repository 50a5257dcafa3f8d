"""How a staged table reads: straight from the event's RocksDB partition, as Faust would."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.types import TP

from streams._staging import (
    Outbox,
    StagedTable,
    TableWriter,
    partition_reader,
    stored_items,
    table_writer,
)


def _event(partition: int) -> Any:
    return SimpleNamespace(message=SimpleNamespace(partition=partition))


@pytest.fixture
def rocksdb_table(tmp_path: Path) -> Any:
    app = faust.App(
        "staging-test",
        broker="kafka://127.0.0.1:1",
        store="rocksdb://",
        datadir=str(tmp_path),
        autodiscover=False,
    )
    return app.Table("states", partitions=4, key_type=bytes, value_type=bytes)


def test_a_read_in_an_events_context_takes_that_partitions_database(rocksdb_table: Any) -> None:
    store = rocksdb_table.data
    store._db_for_partition(1).put(b"aino", b"state of aino")
    read = partition_reader(rocksdb_table)
    assert read(b"aino", _event(1)) == b"state of aino"
    assert read(b"aino", _event(0)) is None  # another partition's database, as Faust's get
    assert read(b"eero", _event(1)) is None


def test_a_read_outside_an_event_goes_through_faust(rocksdb_table: Any) -> None:
    rocksdb_table.data._db_for_partition(2).put(b"aino", b"state of aino")
    assert partition_reader(rocksdb_table)(b"aino", None) == b"state of aino"


def test_a_table_that_is_not_a_plain_rocksdb_one_is_read_through_faust() -> None:
    plain_mapping = {b"aino": bytearray(b"state of aino")}
    read = partition_reader(plain_mapping)
    assert read(b"aino", _event(3)) == b"state of aino"
    assert read(b"eero", _event(3)) is None


def test_the_staged_table_sees_its_own_writes_before_the_store(rocksdb_table: Any) -> None:
    rocksdb_table.data._db_for_partition(0).put(b"aino", b"old")
    staged = StagedTable(rocksdb_table)
    staged.event = _event(0)
    assert staged.get(b"aino") == b"old"
    assert not staged.changed(b"aino")
    staged[b"aino"] = b"new"
    assert staged.get(b"aino") == b"new"
    assert staged.changed(b"aino")
    del staged[b"aino"]
    assert b"aino" not in staged
    assert staged.changed(b"aino")  # deleted is changed too
    staged.discard()
    assert staged.get(b"aino") == b"old"
    assert not staged.changed(b"aino")


class AckingProducer:
    """The worker's producer as the writer uses it: each send acked at its partition's next
    offset."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, int]] = []
        self.ends: dict[int, int] = {}
        self.acks: list[asyncio.Future[Any]] = []
        self.failing = False

    async def send(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        partition: int,
    ) -> asyncio.Future[Any]:
        self.sent.append((topic, key, value, partition))
        offset = self.ends.get(partition, 0)
        self.ends[partition] = offset + 1
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.failing:
            ack.set_exception(RuntimeError("broker gone"))
        else:
            ack.set_result(SimpleNamespace(offset=offset))
        self.acks.append(ack)
        return ack


def _writer(table: Any, producer: AckingProducer) -> TableWriter:
    writer = table_writer(table, lambda: producer)
    assert writer is not None
    return writer


@pytest.mark.asyncio
async def test_the_writer_puts_sends_the_changelog_and_stores_the_last_acked_offset(
    rocksdb_table: Any,
) -> None:
    producer = AckingProducer()
    writer = _writer(rocksdb_table, producer)
    store = rocksdb_table.data
    store._db_for_partition(3).put(b"gone", b"x")
    await writer.write(
        [
            (1, b"aino", b"v1"),
            (1, b"aino", b"v2"),
            (3, b"gone", None),
            (3, b"never-there", None),  # nothing to delete: no tombstone
        ]
    )
    await asyncio.sleep(0)  # the ack callbacks
    changelog = rocksdb_table.changelog_topic.get_topic_name()
    assert producer.sent == [
        (changelog, b"aino", b"v1", 1),
        (changelog, b"aino", b"v2", 1),
        (changelog, b"gone", None, 3),
    ]
    assert store._db_for_partition(1).get(b"aino") == b"v2"
    assert store._db_for_partition(3).get(b"gone") is None
    # what Faust's recovery reads: the offset of the last changelog record each database holds
    assert store.persisted_offset(SimpleNamespace(partition=1)) == 1
    assert store.persisted_offset(SimpleNamespace(partition=3)) == 0
    assert store.persisted_offset(SimpleNamespace(partition=0)) is None


@pytest.mark.asyncio
async def test_a_key_written_twice_in_one_write_ends_as_its_last_write(
    rocksdb_table: Any,
) -> None:
    producer = AckingProducer()
    writer = _writer(rocksdb_table, producer)
    store = rocksdb_table.data
    store._db_for_partition(0).put(b"eero", b"old")
    await writer.write(
        [
            (0, b"aino", b"new"),
            (0, b"aino", None),  # put, then deleted: a tombstone, and nothing stored
            (0, b"eero", None),
            (0, b"eero", None),  # already deleted in this write: no second tombstone
            (0, b"eero", b"back"),
        ]
    )
    changelog = rocksdb_table.changelog_topic.get_topic_name()
    assert producer.sent == [
        (changelog, b"aino", b"new", 0),
        (changelog, b"aino", None, 0),
        (changelog, b"eero", None, 0),
        (changelog, b"eero", b"back", 0),
    ]
    assert store._db_for_partition(0).get(b"aino") is None
    assert store._db_for_partition(0).get(b"eero") == b"back"


@pytest.mark.asyncio
async def test_a_failed_changelog_send_is_logged_and_leaves_the_stored_offset(
    rocksdb_table: Any, caplog: pytest.LogCaptureFixture
) -> None:
    producer = AckingProducer()
    writer = _writer(rocksdb_table, producer)
    await writer.write([(2, b"aino", b"v1")])
    await asyncio.sleep(0)

    producer.failing = True
    with caplog.at_level(logging.ERROR, logger="polku.worker"):
        await writer.write([(2, b"aino", b"v2")])
        await asyncio.sleep(0)
    assert "changelog record not written" in caplog.text
    assert rocksdb_table.data.persisted_offset(SimpleNamespace(partition=2)) == 0


def test_a_table_that_is_not_a_plain_rocksdb_one_gets_no_writer() -> None:
    assert table_writer({}, lambda: AckingProducer()) is None


def test_without_a_producer_a_table_keeps_faust_s_own_write_path(rocksdb_table: Any) -> None:
    assert table_writer(rocksdb_table, None) is None


@pytest.mark.asyncio
async def test_a_staged_table_with_a_writer_saves_through_it(rocksdb_table: Any) -> None:
    producer = AckingProducer()
    staged = StagedTable(rocksdb_table, _writer(rocksdb_table, producer))
    staged.event = _event(2)
    staged[b"aino"] = b"v1"
    await staged.apply(lambda _: None)
    assert rocksdb_table.data._db_for_partition(2).get(b"aino") == b"v1"
    assert [(key, partition) for _, key, _, partition in producer.sent] == [(b"aino", 2)]


def test_stored_items_are_the_active_partitions_pairs_as_faust_reads_them(
    rocksdb_table: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = rocksdb_table.data
    for partition in range(4):
        database = store._db_for_partition(partition)
        database.put(f"customer-{partition}".encode(), f"state {partition}".encode())
        database.put(store.offset_key, b"41")  # Faust's own bookkeeping, not an item
    changelog = rocksdb_table.changelog_topic_name
    actives = {TP(changelog, 1), TP(changelog, 3)}
    monkeypatch.setattr(rocksdb_table.app.assignor, "assigned_actives", lambda: actives)

    stored = sorted(stored_items(rocksdb_table))

    assert stored == [(b"customer-1", b"state 1"), (b"customer-3", b"state 3")]
    assert stored == sorted(rocksdb_table.items())


def test_stored_items_of_a_table_that_is_not_a_plain_rocksdb_one_come_through_faust() -> None:
    plain_mapping = {b"aino": bytearray(b"state of aino")}
    assert list(stored_items(plain_mapping)) == [(b"aino", b"state of aino")]


class _Acks:
    """A stand-in producer: records are acked only when it is told to send them now."""

    def __init__(self) -> None:
        self.held: list[asyncio.Future[int]] = []
        self.sent_now = 0

    async def send(self, **_: Any) -> asyncio.Future[int]:
        ack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.held.append(ack)
        return ack

    def send_now(self) -> None:
        self.sent_now += 1
        for n, ack in enumerate(self.held):
            ack.set_result(n)
        self.held = []


@pytest.mark.asyncio
async def test_settling_at_once_has_the_producer_send_now_and_waits_for_the_acks() -> None:
    producer = _Acks()
    outbox = Outbox(send_now=producer.send_now)
    await outbox.send(producer, b"k", b"v")
    await outbox.send(producer, b"k", b"w")

    await asyncio.wait_for(outbox.settle(), timeout=5)

    assert producer.sent_now == 1
    assert len(outbox) == 0


@pytest.mark.asyncio
async def test_settling_not_at_once_leaves_the_records_to_the_producer() -> None:
    producer = _Acks()
    outbox = Outbox(send_now=producer.send_now)
    await outbox.send(producer, b"k", b"v")
    held = list(producer.held)

    settling = asyncio.ensure_future(outbox.settle(at_once=False))
    await asyncio.sleep(0)
    assert producer.sent_now == 0
    assert not settling.done()  # waiting for the ack the producer sends in its own time
    held[0].set_result(0)
    await asyncio.wait_for(settling, timeout=5)


@pytest.mark.asyncio
async def test_an_outbox_with_nothing_pending_does_not_ask_to_send() -> None:
    producer = _Acks()
    await Outbox(send_now=producer.send_now).settle()
    assert producer.sent_now == 0
