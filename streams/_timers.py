"""The in-memory, due-time-ordered view of the durable timers table.

The changelogged `timers` table is the durable truth; this index is rebuilt from it after each
recovery and kept in step by the journey agent. Only the timers that are due are ever looked
at: popping is O(log n) per fired timer, with no scan of the pending ones.
"""

from __future__ import annotations

import heapq
from datetime import datetime

from journeys import Timer


class DueTimeIndex:
    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []
        self._pending: dict[str, Timer] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, timer_id: object) -> bool:
        return timer_id in self._pending

    def add(self, timer: Timer) -> None:
        self._pending[timer.timer_id] = timer
        heapq.heappush(self._heap, (timer.due_at.timestamp(), timer.timer_id))

    def discard(self, timer_id: str) -> None:
        # the heap entry stays behind and is skipped when it surfaces (lazy deletion)
        self._pending.pop(timer_id, None)

    def clear(self) -> None:
        self._heap.clear()
        self._pending.clear()

    def next_due(self) -> datetime | None:
        self._drop_stale_head()
        return self._pending[self._heap[0][1]].due_at if self._heap else None

    def pop_due(self, now: datetime, limit: int) -> list[Timer]:
        """Remove and return up to `limit` timers due at or before `now`, earliest first."""
        due: list[Timer] = []
        cutoff = now.timestamp()
        while len(due) < limit:
            self._drop_stale_head()
            if not self._heap or self._heap[0][0] > cutoff:
                break
            _, timer_id = heapq.heappop(self._heap)
            due.append(self._pending.pop(timer_id))
        return due

    def _drop_stale_head(self) -> None:
        heap = self._heap
        while heap and (
            heap[0][1] not in self._pending
            or self._pending[heap[0][1]].due_at.timestamp() != heap[0][0]
        ):
            heapq.heappop(heap)
