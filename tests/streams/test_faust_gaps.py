"""The gap guard's rule: read again from the due offset when a fetch skips records, once;
and the commit watch: read again from the committed offset when the acks after it have a hole
that nothing in flight will fill.

The guard on a real broker is exercised by tests/integration/test_rebalance.py, which lost
actions in every run without it, and by `polku bench` B5 (tests/streams/test_bench.py), whose
surviving worker's commit stalled in some runs without the watch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import IllegalStateError
from faust.types import TP

from streams._faust_gaps import (
    DueOffsets,
    StuckCommits,
    _due_offsets,
    commit_holes,
    guard_records,
    repair_stuck_commits_forever,
)

TOUCHPOINTS = TP("touchpoints", 0)
OTHER = TP("touchpoints", 1)


def deliver(due: DueOffsets, tp: TP, *offsets: int) -> list[int | None]:
    return [due.read_again_from(tp, offset) for offset in offsets]


def read_again_after_a_jump(due: DueOffsets, tp: TP, committed: int, jump: int) -> None:
    """A seek to `committed`, a fetch that jumps to `jump`, and the guard's seek back."""
    due.sought(tp, committed)
    assert due.read_again_from(tp, jump) == committed
    due.sought(tp, committed)  # the guard's own seek
    due.reading_again(tp, committed)


def test_records_in_order_after_a_seek_are_delivered() -> None:
    due = DueOffsets()
    due.sought(TOUCHPOINTS, 100)
    assert deliver(due, TOUCHPOINTS, 100, 101, 102) == [None, None, None]


def test_a_fetch_that_starts_past_the_committed_offset_is_read_again_from_it() -> None:
    due = DueOffsets()
    due.sought(TOUCHPOINTS, 100)
    assert due.read_again_from(TOUCHPOINTS, 117) == 100


def test_one_skipped_record_is_enough() -> None:
    # Faust's own check lets a jump of one through: the record at the committed offset is lost
    due = DueOffsets()
    due.sought(TOUCHPOINTS, 100)
    assert due.read_again_from(TOUCHPOINTS, 101) == 100


def test_a_jump_between_delivered_records_is_read_again() -> None:
    due = DueOffsets()
    due.sought(TOUCHPOINTS, 100)
    deliver(due, TOUCHPOINTS, 100, 101)
    assert due.read_again_from(TOUCHPOINTS, 110) == 102


def test_the_same_jump_after_reading_again_is_a_real_gap() -> None:
    # offsets that hold no records (transaction markers, compaction) come back the same way
    due = DueOffsets()
    read_again_after_a_jump(due, TOUCHPOINTS, 100, 105)
    assert deliver(due, TOUCHPOINTS, 105, 106) == [None, None]


def test_after_the_records_came_again_a_later_jump_is_read_again() -> None:
    due = DueOffsets()
    read_again_after_a_jump(due, TOUCHPOINTS, 100, 105)
    deliver(due, TOUCHPOINTS, 100, 101)
    assert due.read_again_from(TOUCHPOINTS, 130) == 102


def test_a_rebalance_seek_forgets_that_a_jump_was_read_again() -> None:
    # two rebalances in a row can seek to the same committed offset: the second jump is as
    # suspect as the first, and letting it through would commit past unread records
    due = DueOffsets()
    read_again_after_a_jump(due, TOUCHPOINTS, 100, 120)
    due.sought(TOUCHPOINTS, 100)  # the next rebalance
    assert due.read_again_from(TOUCHPOINTS, 130) == 100


def test_without_a_committed_offset_nothing_is_compared_until_a_record_arrives() -> None:
    due = DueOffsets()
    due.sought(TOUCHPOINTS, None)
    assert deliver(due, TOUCHPOINTS, 57, 58) == [None, None]
    assert due.read_again_from(TOUCHPOINTS, 60) == 59


def test_a_record_below_the_due_offset_does_not_move_it_back() -> None:
    # Faust drops a record it has already read; the due offset must not follow it down
    due = DueOffsets()
    due.sought(TOUCHPOINTS, 100)
    deliver(due, TOUCHPOINTS, 100, 101, 95)
    assert due.read_again_from(TOUCHPOINTS, 102) is None


def test_partitions_are_followed_apart() -> None:
    due = DueOffsets()
    due.sought(TOUCHPOINTS, 100)
    due.sought(OTHER, 7)
    assert due.read_again_from(OTHER, 7) is None
    assert due.read_again_from(TOUCHPOINTS, 104) == 100


CHANGELOG = TP("journey_state-changelog", 0)


@dataclass
class FakeConsumer:
    """What the guards read of Faust's consumer: acking topics, its books, and seeks."""

    committed: dict[TP, int] = field(default_factory=dict)
    acked: dict[TP, list[int]] = field(default_factory=dict)
    unacked: list[tuple[TP, int]] = field(default_factory=list)
    seeks: list[tuple[TP, int]] = field(default_factory=list)
    _commit_fut: object | None = None  # Faust's commit in progress
    revoked: set[TP] = field(default_factory=set)  # every other partition is assigned

    def __post_init__(self) -> None:
        self.app = SimpleNamespace(
            topics=SimpleNamespace(acks_enabled_for=lambda topic: topic == TOUCHPOINTS.topic)
        )

    @property
    def _committed_offset(self) -> dict[TP, int]:
        return self.committed

    @property
    def _acked(self) -> dict[TP, list[int]]:
        return self.acked

    @property
    def _unacked_messages(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(tp=tp, offset=offset) for tp, offset in self.unacked]

    def assignment(self) -> set[TP]:
        return {TOUCHPOINTS, OTHER, CHANGELOG} - self.revoked

    async def seek(self, tp: TP, offset: int) -> None:
        if tp not in self.assignment():
            raise IllegalStateError(f"No current assignment for partition {tp}")
        # as the installed guard's seek does: the due offset follows every seek
        self.seeks.append((tp, offset))
        _due_offsets(self).sought(tp, offset)


async def fetch(consumer: FakeConsumer, records: Iterable[tuple[TP, int]]) -> list[tuple[TP, int]]:
    async def fetched() -> AsyncIterator[tuple[TP, Any]]:
        for tp, offset in records:
            yield tp, SimpleNamespace(topic=tp.topic, offset=offset)

    return [(tp, message.offset) async for tp, message in guard_records(consumer, fetched())]


@pytest.mark.asyncio
async def test_a_jump_in_a_fetch_is_read_again_and_the_rest_of_the_fetch_dropped() -> None:
    consumer = FakeConsumer()
    await consumer.seek(TOUCHPOINTS, 54)

    assert await fetch(consumer, [(TOUCHPOINTS, 73), (TOUCHPOINTS, 74), (OTHER, 3)]) == [(OTHER, 3)]
    assert consumer.seeks[-1] == (TOUCHPOINTS, 54)
    # the same jump from the same offset again: those offsets hold no records
    assert await fetch(consumer, [(TOUCHPOINTS, 73)]) == [(TOUCHPOINTS, 73)]


@pytest.mark.asyncio
async def test_changelog_records_pass_unguarded() -> None:
    # recovery reads the changelogs through the same consumer; they are no stream's input
    consumer = FakeConsumer()
    await consumer.seek(CHANGELOG, 5)

    assert await fetch(consumer, [(CHANGELOG, 9)]) == [(CHANGELOG, 9)]
    assert consumer.seeks == [(CHANGELOG, 5)]


def test_a_hole_right_after_the_committed_offset_is_seen() -> None:
    # what B5's stalled survivor held: committed 86, acks from 88 on, nothing in flight
    consumer = FakeConsumer(committed={TOUCHPOINTS: 86}, acked={TOUCHPOINTS: [90, 88, 89]})
    assert commit_holes(consumer) == {TOUCHPOINTS: (86, 88)}


@pytest.mark.parametrize(
    ("acked", "unacked"),
    [
        ([86, 87, 88], []),  # no hole
        ([87, 88], []),  # Faust commits past one (its own off-by-one), so this moves
        ([], []),  # nothing acked since the commit
        ([88, 89], [(TOUCHPOINTS, 87)]),  # 87 still in processing: its ack will come
    ],
)
def test_no_hole_while_the_commit_can_still_move(
    acked: list[int], unacked: list[tuple[TP, int]]
) -> None:
    consumer = FakeConsumer(committed={TOUCHPOINTS: 86}, acked={TOUCHPOINTS: acked})
    consumer.unacked = unacked
    assert commit_holes(consumer) == {}


def test_no_hole_while_a_commit_is_in_progress() -> None:
    # the commit took 88-89 out of the books and has not yet moved the committed offset there
    consumer = FakeConsumer(committed={TOUCHPOINTS: 86}, acked={TOUCHPOINTS: [90, 91]})
    consumer._commit_fut = object()
    assert commit_holes(consumer) == {}
    consumer._commit_fut = None
    assert commit_holes(consumer) == {TOUCHPOINTS: (86, 90)}


def test_no_hole_on_a_partition_this_worker_no_longer_holds() -> None:
    # B5's survivor: acks of a revoked partition's last records came in after the revoke
    consumer = FakeConsumer(
        committed={TOUCHPOINTS: 775, OTHER: 10}, acked={TOUCHPOINTS: [790, 791], OTHER: [15]}
    )
    consumer.revoked = {TOUCHPOINTS}
    assert commit_holes(consumer) == {OTHER: (10, 15)}


def test_holes_only_on_stream_inputs_with_a_committed_offset() -> None:
    consumer = FakeConsumer(committed={CHANGELOG: 3}, acked={CHANGELOG: [9], TOUCHPOINTS: [40, 41]})
    assert commit_holes(consumer) == {}


def test_a_hole_seen_twice_running_is_stuck() -> None:
    stuck = StuckCommits()
    assert stuck.observe({TOUCHPOINTS: (86, 88)}) == []
    assert stuck.observe({TOUCHPOINTS: (86, 88), OTHER: (10, 20)}) == [(TOUCHPOINTS, 86)]


def test_a_hole_that_moves_or_closes_is_not_stuck() -> None:
    stuck = StuckCommits()
    stuck.observe({TOUCHPOINTS: (86, 88)})
    assert stuck.observe({TOUCHPOINTS: (86, 95)}) == []  # acked offsets still coming in
    assert stuck.observe({}) == []  # filled
    assert stuck.observe({TOUCHPOINTS: (86, 95)}) == []  # a new hole starts over


def test_after_reading_again_the_same_hole_needs_two_more_checks() -> None:
    # the records read again need time to arrive and be acked before the hole is judged again
    stuck = StuckCommits()
    stuck.observe({TOUCHPOINTS: (86, 88)})
    assert stuck.observe({TOUCHPOINTS: (86, 88)}) == [(TOUCHPOINTS, 86)]
    assert stuck.observe({TOUCHPOINTS: (86, 88)}) == []
    assert stuck.observe({TOUCHPOINTS: (86, 88)}) == [(TOUCHPOINTS, 86)]


@pytest.mark.asyncio
async def test_the_watch_reads_a_stuck_partition_again_from_its_committed_offset() -> None:
    consumer = FakeConsumer(
        committed={TOUCHPOINTS: 86, OTHER: 10}, acked={TOUCHPOINTS: [88, 89], OTHER: [10, 11]}
    )
    watch = asyncio.create_task(repair_stuck_commits_forever(consumer, interval_seconds=0.01))
    try:
        for _ in range(200):
            await asyncio.sleep(0.01)
            if consumer.seeks:
                break
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch

    assert consumer.seeks[0] == (TOUCHPOINTS, 86)
    assert {tp for tp, _ in consumer.seeks} == {TOUCHPOINTS}  # OTHER's commit can move


@pytest.mark.asyncio
async def test_the_watch_goes_on_when_a_rebalance_revokes_a_partition_it_reads_again() -> None:
    consumer = FakeConsumer(
        committed={TOUCHPOINTS: 86, OTHER: 10}, acked={TOUCHPOINTS: [88, 89], OTHER: [12]}
    )
    seek = consumer.seek

    async def seek_then_lose_the_other(tp: TP, offset: int) -> None:
        # a rebalance lands while the round's first seek awaits and takes the other partition
        if not consumer.revoked:
            consumer.revoked = {OTHER if tp == TOUCHPOINTS else TOUCHPOINTS}
        await seek(tp, offset)

    consumer.seek = seek_then_lose_the_other  # type: ignore[method-assign]
    watch = asyncio.create_task(repair_stuck_commits_forever(consumer, interval_seconds=0.01))
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert not watch.done()  # an IllegalStateError would have ended it
    watch.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watch
    assert consumer.seeks  # it did read again where it still could
