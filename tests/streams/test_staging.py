"""How a staged table reads: straight from the event's RocksDB partition, as Faust would."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest

from streams._staging import StagedTable, partition_reader


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
    staged[b"aino"] = b"new"
    assert staged.get(b"aino") == b"new"
    del staged[b"aino"]
    assert b"aino" not in staged
    staged.discard()
    assert staged.get(b"aino") == b"old"
