"""After a rebalance, every record the consumer fetches reaches an agent.

Faust's `Recovery.on_recovery_completed` (faust-streaming 0.15.3) ends a rebalance in this
order: resume the stream partitions, seek them to the committed offsets, then resume flow
control, which clears every agent's input queue. Flow is already active at that point (the
changelog recovery turned it on), so while the seek waits on one OffsetFetch per partition the
consumer fetches the just-resumed partitions and hands their records to the agents, and the
clear then throws away those the agent has not yet taken. The consumer's position is past
them, and nothing reads them again: the seek had already been made, and Faust's read offset
is then reset to the committed offset, which hides the jump from the gap guard
(`_faust_gaps`). Nothing is lost, since the records were never acked, but the partition stalls:
its commit stays where it was until a newer record arrives and the gap guard reads the
partition again. With no newer record (the end of a backlog), it stays there for good.

`polku bench` B5 (two workers, one SIGKILLed) stalled this way in 5 of 54 runs, as did the
large chaos run in about one run in two; after the fix, 50 of 50 and 4 of 4 passed. A worker's
log with each fetch and batch written out showed it: the survivor took over
`touchpoints[1]`, fetched offsets 50..127 during the seek, its agent processed 50..92, the
clear dropped 93..127, and the commit stayed at 93 with the position at the partition's end.
When the clear instead drops the first records of a fetch and the agent goes on with the rest,
the acks have a hole after the committed offset: the stuck commits that
`_faust_gaps.StuckCommits` repairs. Upstream: faust-streaming#596.

The fix is Faust's method with its last steps reordered: seek, resume flow control (the
queues are cleared while nothing of the new assignment can be in them), and only then resume
the stream partitions. Everything else is Faust 0.15.3's code; a test checks that the
installed Faust's method is still the one this was made from.

The reorder widened a second window, which B5 hit in its first run with it. Faust's
fetch passes aiokafka its live set of active partitions, and aiokafka reads an empty set as
"every partition". Between the end of the changelog recovery (which pauses the changelogs)
and the resume of the stream partitions, the set is empty: a fetch under way then took the
still-paused touchpoints partitions' records, which Faust's `getmany` skips as not active.
The seek had been made, so they were never read again. A fetch from before a rebalance holds
the old generation's set, emptied at the revoke, in the same way. `fetch_only_active` makes a
fetch return only records of partitions in the live set when it returns, so an empty set means
none.

Pausing the stream partitions through the seek often cost about a second after a rebalance (in
the diagnostic log, 6 of 20 B5 runs; 10 of 10 with the sleep below fixed alone): the fetch
under way when the changelogs were paused had nothing left to take and waited out its one
second, and the stream partitions resumed meanwhile waited for it. A fetch that then found no
partition active slept another second (Faust's `_wait_next_records`). `fetch_only_active`
waits at most 50 ms in a fetch, and `wait_next_records_promptly` looks again every 50 ms while
no partition is active; records that are there are returned at once either way.

The same fetch also pauses in aiokafka the changelog partitions that Faust has paused in its
own books (`pause_untaken_changelogs`): aiokafka fetched them on, and their records, which
nothing took, held back every fetch for 0.1 s at a time (B2's whole tail).
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from streams._faust_fixes import note_returned

_INSTALLED = "_polku_resume_after_clear"

# Faust's own methods, which those below replace (`on_recovery_completed` is a reordered copy)
FAUST_ON_RECOVERY_COMPLETED = Recovery.on_recovery_completed
FAUST_FETCH_RECORDS = AIOKafkaConsumerThread._fetch_records
FAUST_WAIT_NEXT_RECORDS = Consumer._wait_next_records

_IDLE_POLL_SECONDS = 0.05


def install_resume_after_clear() -> None:
    """Patch Faust's recovery and its fetch (idempotent)."""
    if getattr(Recovery, _INSTALLED, False):
        return
    Recovery.on_recovery_completed = on_recovery_completed  # type: ignore[method-assign]
    AIOKafkaConsumerThread._fetch_records = fetch_only_active  # type: ignore[method-assign,assignment]
    Consumer._wait_next_records = wait_next_records_promptly  # type: ignore[method-assign]
    setattr(Recovery, _INSTALLED, True)


# the signature of the method it replaces
async def wait_next_records_promptly(self: Any, timeout: float) -> Any:  # noqa: ASYNC109
    """Faust's `Consumer._wait_next_records`, without its 1 s sleep while no partition is
    active; notes what each fetch returned."""
    if self.flow_active and not self.app.client_only and not self._get_active_partitions():
        await self.sleep(_IDLE_POLL_SECONDS)  # returns early when the consumer stops
        return {}, self._get_active_partitions()
    records, active = await FAUST_WAIT_NEXT_RECORDS(self, timeout)
    note_returned(self, records)  # for the input horizon (`_input_horizon`)
    return records, active


async def fetch_only_active(self: Any, consumer: Any, active_partitions: Any, **kwargs: Any) -> Any:
    """Faust's `AIOKafkaConsumerThread._fetch_records`: an empty live set means no partition,
    and the wait for records is short, so that partitions resumed during it are soon taken."""
    if active_partitions is not None:  # None: a client-only app, every partition
        pause_untaken_changelogs(self.consumer, consumer, active_partitions)
        active_partitions = ActivePartitions(active_partitions)
    if kwargs.get("timeout") is not None:
        kwargs["timeout"] = min(kwargs["timeout"], _IDLE_POLL_SECONDS)
    return await FAUST_FETCH_RECORDS(self, consumer, active_partitions, **kwargs)


def pause_untaken_changelogs(faust_consumer: Any, consumer: Any, active: Any) -> None:
    """Pause in aiokafka the changelog partitions Faust does not take, resume those it does.

    Faust pauses partitions in its own books only, and aiokafka goes on fetching them. A
    changelog partition is paused there once its recovery is done (or at once when there is
    nothing to recover), and the worker's own table writes then come back in fetches that
    nothing takes. aiokafka sends no fetch to a broker for up to its prefetch backoff (0.1 s)
    while fetched records of any partition wait there: in `polku bench` B2 two such stalls of
    every partition made the whole tail (max 117-122 ms, against 41-78 ms after the run's
    first 0.5 s), one after the first write to changelog[0], one after the first to the others.

    A fetch sent before the pause can still bring records of the partition; they are dropped
    (its position is where they start, so a resume fetches them again) and the fetcher woken.
    Runs in the consumer's thread: aiokafka's pause and resume make and complete futures of
    its loop. Only changelogs: Faust takes their records only while it recovers them or keeps
    them as a standby, and has them among its active partitions then.
    """
    changelogs = faust_consumer.app.tables.changelog_topics
    fetcher = consumer._fetcher
    paused = consumer.paused()
    dropped = False
    for tp in consumer.assignment():
        if tp.topic not in changelogs:
            continue
        if tp in active:
            if tp in paused:
                consumer.resume(tp)
            continue
        if tp not in paused:
            consumer.pause(tp)
        dropped |= fetcher._records.pop(tp, None) is not None
    if dropped:
        fetcher._notify(fetcher._wait_consume_future)  # it may be waiting out the backoff


class ActivePartitions:
    """Faust's live set of active partitions as aiokafka's fetch reads it: never "all".

    aiokafka's `Fetcher.fetched_records(partitions)` returns records of every partition when
    `partitions` is empty, and checks membership again at each round of its wait.
    """

    def __init__(self, live: Any) -> None:
        self._live = live

    def __bool__(self) -> bool:
        return True

    def __contains__(self, tp: object) -> bool:
        return tp in self._live


async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
    """Faust's `Recovery.on_recovery_completed`, stream partitions resumed last."""
    consumer = self.app.consumer
    self.log.info("Restore complete!")
    await self.app.on_rebalance_complete.send()
    self._set_recovery_ended()
    # This needs to happen if all goes well
    callback_coros = [
        asyncio.ensure_future(
            table.on_recovery_completed(
                self.actives_for_table[table],
                self.standbys_for_table[table],
            )
        )
        for table in self.tables.values()
    ]
    if callback_coros:
        await asyncio.wait(callback_coros)
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning(
            f"Recovery rebalancing again app id "
            f"{self.app.consumer_generation_id} param {generation_id}"
        )
        return
    if assignment:
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
    self.completed.set()
    # clears the agents' queues: the stream partitions are still paused, so nothing fetched
    # for the new assignment is in them
    self.app.flow_control.resume()
    consumer.resume_flow()
    self.log.dev("Resume stream partitions")
    consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    # finally make sure the fetcher is running.
    await self.app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    if not self.app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")
