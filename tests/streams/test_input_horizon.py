"""The input horizon: timers wait while an input partition has older records unprocessed."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import cast

from faust.types import TP

from streams._input_horizon import InputProgress, PartitionProgress, input_horizon
from streams._staging import Event

NOW = 1_000.0
TOUCHPOINTS = TP("touchpoints", 0)
OTHER = TP("touchpoints", 1)


def progress(
    end: int | None,
    processed: int | None,
    at: float | None = None,
    position: int | None = None,
    handed: int | None = None,
    committed: int | None = None,
    returned: int | None = None,
) -> PartitionProgress:
    return PartitionProgress(end, committed, position, handed, processed, at, returned)


def test_partitions_processed_to_their_end_leave_the_horizon_at_now() -> None:
    assert input_horizon(NOW, [progress(10, 9, 900.0), progress(3, 2, 990.0)]) == NOW


def test_a_backlog_holds_the_horizon_at_its_last_processed_record() -> None:
    partitions = [progress(10, 9, 990.0), progress(50, 19, 940.0), progress(30, 24, 960.0)]
    assert input_horizon(NOW, partitions) == 940.0


def test_records_handed_on_but_not_processed_still_hold_it() -> None:
    # the identity step may still send them on behind a timer.fired sent now
    assert input_horizon(NOW, [progress(50, 19, 940.0, position=50, handed=49)]) == 940.0


def test_a_backlog_with_nothing_processed_yet_holds_every_timer() -> None:
    # a partition just taken over: its backlog may hold anything
    assert input_horizon(NOW, [progress(50, None, position=20, handed=20)]) == -math.inf


def test_an_end_not_known_yet_is_a_backlog() -> None:
    # before the first fetch response
    assert input_horizon(NOW, [progress(None, 19, 950.0)]) == 950.0
    assert input_horizon(NOW, [progress(None, None, position=0)]) == -math.inf


def test_a_partition_read_from_its_end_has_no_backlog() -> None:
    # after an assignment the consumer sought to the committed offset, which is the end
    assert input_horizon(NOW, [progress(40, None, position=40, handed=40)]) == NOW
    assert input_horizon(NOW, [progress(0, None, position=0)]) == NOW  # empty partition


def test_an_end_past_the_last_record_does_not_hold_timers_forever() -> None:
    # a transactional producer's commit marker at 10: no record ever has offset 9
    assert input_horizon(NOW, [progress(11, 8, 990.0, position=11, handed=8)]) == NOW
    assert input_horizon(NOW, [progress(11, 7, 980.0, position=11, handed=8)]) == 980.0


def test_a_fetch_still_being_handed_on_holds_it() -> None:
    # the fetch returned 20..49 (position at the end); Faust has handed on 20..29 so far and
    # the agent has processed them, between two of Faust's hand-overs
    held = progress(50, 29, 970.0, position=50, handed=29, returned=49)
    assert input_horizon(NOW, [held]) == 970.0
    done = progress(50, 29, 970.0, position=50, handed=29, returned=29)  # a marker after 29
    assert input_horizon(NOW, [done]) == NOW


def test_a_partition_committed_to_its_end_has_no_backlog() -> None:
    # what the agent skipped at a rebalance (an old generation's records) is acked, not processed
    assert (
        input_horizon(NOW, [progress(60, 41, 980.0, position=60, handed=59, committed=60)]) == NOW
    )
    assert (
        input_horizon(NOW, [progress(60, 41, 980.0, position=60, handed=59, committed=55)]) == 980.0
    )


def test_no_partitions_no_limit() -> None:
    assert input_horizon(NOW, []) == NOW


@dataclass
class Books:
    """A consumer's view: what is held, each partition's end, position and read offset."""

    highwaters: dict[TP, int]
    positions: dict[TP, int]
    handed: dict[TP, int] = field(default_factory=dict)
    committed: dict[TP, int] = field(default_factory=dict)
    position_calls: int = 0

    def progress(self) -> InputProgress:
        async def position(tp: TP) -> int | None:
            self.position_calls += 1
            return self.positions.get(tp)

        return InputProgress(
            held=lambda: list(self.highwaters),
            highwater=self.highwaters.get,
            committed=self.committed.get,
            position=position,
            handed=self.handed.get,
        )


def _event(tp: TP, offset: int, timestamp: float) -> Event:
    message = SimpleNamespace(tp=tp, topic=tp.topic, offset=offset, timestamp=timestamp)
    return cast(Event, SimpleNamespace(message=message))


def test_the_horizon_follows_what_the_agent_processed() -> None:
    books = Books(highwaters={TOUCHPOINTS: 5, OTHER: 3}, positions={TOUCHPOINTS: 5, OTHER: 3})
    books.handed = {TOUCHPOINTS: 4, OTHER: 3}
    inputs = books.progress()
    assert asyncio.run(inputs.horizon(NOW)) == -math.inf  # touchpoints 2..4 handed on only

    inputs.processed([_event(TOUCHPOINTS, 2, 970.0), _event(TOUCHPOINTS, 3, 980.0)])
    assert asyncio.run(inputs.horizon(NOW)) == 980.0  # 4 not processed yet

    inputs.processed([_event(TOUCHPOINTS, 4, 990.0)])
    books.position_calls = 0
    assert asyncio.run(inputs.horizon(NOW)) == NOW
    assert books.position_calls == 1  # only the other partition, with nothing processed


def test_after_a_rebalance_only_records_processed_since_count() -> None:
    books = Books(highwaters={TOUCHPOINTS: 5}, positions={TOUCHPOINTS: 5})
    inputs = books.progress()
    inputs.processed([_event(TOUCHPOINTS, 4, 990.0)])
    assert asyncio.run(inputs.horizon(NOW)) == NOW

    # the rebalance seeks back to the committed offset 3: 3 and 4 come again
    inputs.forget()
    books.positions[TOUCHPOINTS] = 3
    books.handed[TOUCHPOINTS] = 3
    assert asyncio.run(inputs.horizon(NOW)) == -math.inf
