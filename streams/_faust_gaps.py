"""No input record is committed unless Faust delivered it: a guard against Faust's "gaps".

Faust's consumer treats a jump between the offset it last read on a partition and the next
record it gets as a gap (offsets compaction removed, or transaction markers) and counts every
offset in between as processed, so the next commit passes them. After a rebalance the jump also
happens for records that exist and were never delivered: the worker seeks its partitions to the
committed offsets while records fetched around the rebalance are still on their way, and the
first record it then gets lies past the committed offset. The rebalance test
(tests/integration/test_rebalance.py) lost touchpoints and timer events this way in every run;
every lost record lay in such a gap, e.g. `touchpoints[2]` 55..72 committed by a worker that had
sought to 54 and next got 73 (faust-streaming 0.15, issue #216 upstream describes the same).

The guard follows the next offset each input partition should deliver (set by every seek and
every record). When a fetched record lies past it, the consumer seeks back there and drops the
rest of that fetch for the partition, so the records come again, in order. Only when the same
jump comes back from the same offset do those offsets really hold no records, and the record is
let through as Faust's gap.

A second guard watches the commits. `polku bench` B5 (two workers, one SIGKILLed) stalled in 2
of 13 runs: the survivor took over two partitions and processed every record on them, yet their
commits stayed where the dead worker had left them (committed 86 and 87, acks only from 88 and
89 on). The two records right after each committed offset were acked nowhere, so Faust, which
commits only while its acks reach back to the committed offset, never committed there again.
Most likely this was the race that `_faust_resume` later fixed, its clear of the agents' queues
falling after the first records of a fetch were handed on and before the rest were. The watch
stays as the net for any other way to lose an ack (Faust's books allow more around a rebalance:
it drops acked offsets when it computes a commit, before the commit is made, and records the
committed offset whether the commit went through or not). `StuckCommits` sees a partition whose
acks have such a hole right after the committed offset, with nothing in flight that could fill
it, at two checks running; the consumer then reads the partition again from the committed
offset, the records fill the hole, and the commit moves on. Reading again is at-least-once:
the records' actions come again with the same `action_id`s, which senders drop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiokafka.errors import IllegalStateError
from faust.transport.consumer import Consumer, ThreadDelegateConsumer
from faust.types import TP, Message

from streams._faust_fixes import committed_offset

log = logging.getLogger("polku.consumer")

_INSTALLED = "_polku_gap_guard"


class DueOffsets:
    """The next offset each input partition should deliver, and the jumps already read again.

    Pure bookkeeping, so that the rule is testable without a broker: `sought` at every seek,
    `read_again_from` for every fetched record, `reading_again` after the guard's own seek.
    """

    def __init__(self) -> None:
        self._due: dict[TP, int] = {}
        self._read_again: dict[TP, int] = {}

    def sought(self, tp: TP, offset: int | None) -> None:
        """The consumer now reads `tp` from `offset` (None or 0: from where the broker resets)."""
        self._read_again.pop(tp, None)  # a new position: an earlier jump says nothing about it
        if offset is None or offset <= 0:
            self._due.pop(tp, None)
        else:
            self._due[tp] = offset

    def read_again_from(self, tp: TP, offset: int) -> int | None:
        """Where to read `tp` again from, if a record at `offset` skips records; else None."""
        due = self._due.get(tp)
        if due is not None and offset > due and self._read_again.get(tp) != due:
            return due
        # delivered: the due offset moves on (never back: Faust drops a record it has read)
        self._read_again.pop(tp, None)
        self._due[tp] = offset + 1 if due is None else max(due, offset + 1)
        return None

    def reading_again(self, tp: TP, offset: int) -> None:
        """The guard sought `tp` back to `offset`: the same jump from there again is real."""
        self._read_again[tp] = offset


def install_gap_guard() -> None:
    """Patch Faust's consumer so that a fetch jumping past undelivered records is read again."""
    if getattr(Consumer, _INSTALLED, False):
        return
    _wrap_getmany()
    _wrap_seeks()
    setattr(Consumer, _INSTALLED, True)


def _due_offsets(consumer: Any) -> DueOffsets:
    found: DueOffsets | None = consumer.__dict__.get("_polku_due_offsets")
    if found is None:
        found = consumer.__dict__["_polku_due_offsets"] = DueOffsets()
    return found


def _wrap_getmany() -> None:
    getmany = Consumer.getmany

    # the signature of the method it replaces
    async def guarded(self: Any, timeout: float) -> AsyncIterator[tuple[TP, Message]]:  # noqa: ASYNC109
        async for tp, message in guard_records(self, getmany(self, timeout)):
            yield tp, message

    Consumer.getmany = guarded  # type: ignore[method-assign]


async def guard_records(
    consumer: Any, records: AsyncIterator[tuple[TP, Message]]
) -> AsyncIterator[tuple[TP, Message]]:
    """The records of one fetch that may go on to the streams; the others are read again."""
    due = _due_offsets(consumer)
    sought: set[TP] = set()
    async for tp, message in records:
        if tp in sought:
            continue  # the rest of a fetch that was sought back: it comes again after the seek
        if not consumer.app.topics.acks_enabled_for(message.topic):
            yield tp, message  # not a stream's input (a changelog during recovery)
            continue
        again = due.read_again_from(tp, message.offset)
        if again is None:
            yield tp, message
            continue
        log.warning(
            "%s[%s]: got offset %s where %s was due; reading again from %s",
            tp.topic,
            tp.partition,
            message.offset,
            again,
            again,
        )
        sought.add(tp)
        await consumer.seek(tp, again)
        due.reading_again(tp, again)


def _wrap_seeks() -> None:
    seek = Consumer.seek
    seek_to_committed = ThreadDelegateConsumer.seek_to_committed

    async def guarded_seek(self: Any, partition: TP, offset: int) -> None:
        await seek(self, partition, offset)
        _due_offsets(self).sought(partition, offset)

    async def guarded_seek_to_committed(self: Any) -> Mapping[TP, int]:
        committed = await seek_to_committed(self)
        due = _due_offsets(self)
        for tp, offset in committed.items():
            due.sought(tp, offset)
        return committed

    Consumer.seek = guarded_seek  # type: ignore[method-assign]
    ThreadDelegateConsumer.seek_to_committed = guarded_seek_to_committed  # type: ignore[method-assign]


Hole = tuple[int, int]


class StuckCommits:
    """Partitions whose commit cannot move: a hole in the acks right after the committed offset.

    Pure bookkeeping: `observe` takes each check's holes, (committed offset, lowest acked
    offset) per partition, and names the partitions to read again, with the offset to read
    from: those whose hole is the same as at the check before. A hole that a record still in
    processing will fill is not passed in; one that changes is still moving.
    """

    def __init__(self) -> None:
        self._last: dict[TP, Hole] = {}

    def observe(self, holes: Mapping[TP, Hole]) -> list[tuple[TP, int]]:
        stuck = [(tp, hole[0]) for tp, hole in holes.items() if self._last.get(tp) == hole]
        self._last = {tp: hole for tp, hole in holes.items() if self._last.get(tp) != hole}
        return stuck


def commit_holes(consumer: Any) -> dict[TP, Hole]:
    """Faust's books: input partitions whose acks start past the offset after the committed one.

    Faust itself commits only while the lowest acked offset is at most one past the committed
    offset (`Consumer._new_offset`); a record still unacked below the lowest ack is in flight.
    Only partitions this worker holds: Faust's books can still hold a revoked partition, whose
    acks arrived after the revoke (B5's survivor, its partner killed right after a rebalance,
    sought such a partition and crashed on aiokafka's `IllegalStateError`). Empty while a
    commit is in progress: it has taken the acks it commits out of the books but
    not yet moved the committed offset, which looks like a hole (a million-timer B3 run on a
    starved machine read four partitions again from a 6.6 s commit's old offsets).
    """
    if getattr(consumer, "_commit_fut", None) is not None:
        return {}
    assigned = consumer.assignment()
    in_flight: dict[TP, int] = {}
    for message in list(consumer._unacked_messages):
        in_flight[message.tp] = min(message.offset, in_flight.get(message.tp, message.offset))
    holes = {}
    for tp, acked in list(consumer._acked.items()):
        committed = committed_offset(consumer, tp)
        if not acked or committed is None or not consumer.app.topics.acks_enabled_for(tp.topic):
            continue
        if tp not in assigned:
            # books of a revoked partition (acks of its last records came after the revoke):
            # another worker reads it now, and a seek here would crash the consumer
            continue
        lowest = min(acked)
        if lowest - committed > 1 and in_flight.get(tp, lowest) >= lowest:
            holes[tp] = (committed, lowest)
    return holes


async def repair_stuck_commits_forever(consumer: Any, interval_seconds: float) -> None:
    """Every interval: read again from the committed offset where the commit is stuck."""
    stuck = StuckCommits()
    log.info("watching the input partitions' commits every %.0f s", interval_seconds)
    while True:
        await asyncio.sleep(interval_seconds)
        for tp, committed in stuck.observe(commit_holes(consumer)):
            log.warning(
                "%s[%s]: commit stuck at %s, offsets after it never acked; reading again from %s",
                tp.topic,
                tp.partition,
                committed,
                committed,
            )
            try:
                await consumer.seek(tp, committed)
            except IllegalStateError:
                # revoked by a rebalance during an earlier seek of this round
                log.info("%s[%s]: no longer assigned, not read again", tp.topic, tp.partition)
