"""The worker's use of Python's cyclic garbage collector.

Almost everything a worker allocates is freed by reference counting; the cyclic collector
only walks the objects, and a collection costs in proportion to the objects it finds alive.
A batch keeps thousands of them alive until it is saved (each event's state before and after,
its outcome, its records), so a collection that falls inside a batch walks them all, though
they are freed a moment later; between batches only what outlives them is left (the kept
states, `_state_cache`).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from streams._settings import Settings


def tune_garbage_collector(settings: Settings) -> None:
    """Collect cycles less often.

    At Python's default thresholds the collector ran a full collection every few batches over
    every live object, the kept states included. Measured in a B1 run (20,000 events,
    `gc.callbacks`): 4.3 s of collections, 3.5 s of them full ones, at (700, 10, 10); 1.8 s at
    (50,000, 20, 50), of which the 0.9 s of full ones ran at start, before this is called.
    """
    # not gc.freeze(): it leaves the oldest generation's size at zero, and a full collection
    # then runs whenever its threshold is reached, not only once that generation has grown
    gc.set_threshold(*settings.gc_thresholds)


@contextmanager
def collection_paused() -> Iterator[None]:
    """No automatic collection inside the block: the agent's batch of records runs in it.

    The collector counts allocations less deallocations, so once the block ends and the batch
    has freed what it held, the next collection (when the count is past the threshold) walks
    what has outlived the batch, not the batch. Measured in B1 (60,000 events, 5,000
    customers, `gc.callbacks`): 59 collections of the youngest generation took 2.5 s of a
    ~20 s run, and 8 took 0.5 s with the batches in this block. B1 in three interleaved
    pairs of runs: 2,866 -> 3,198 events/s on average at 60,000 events, 2,206 -> 2,638 at
    150,000 (docs/performance-log.md).

    Not a batch of fired timers: with those paused too, the restarted worker of a burst of
    10,000 ran one collection of 0.4 s (B3, `--timers 200000`, one run), and the burst's lag
    was no better for the pause (docs/performance-log.md).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
