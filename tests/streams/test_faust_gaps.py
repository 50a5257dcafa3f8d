"""The gap guard's rule: read again from the due offset when a fetch skips records, once.

The guard on a real broker is exercised by tests/integration/test_rebalance.py, which lost
actions in every run without it.
"""

from __future__ import annotations

from faust.types import TP

from streams._faust_gaps import DueOffsets

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
