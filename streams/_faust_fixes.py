"""Work-arounds for where the broker or Faust deviate from what polku relies on.

Tansu answers ListOffsets("latest") with the start of a partition's last record batch + 1, not
the partition's end (DESIGN.md). Faust's changelog recovery takes its highwaters from exactly
that call, so a changelog whose last batch held several records was restored short: on an empty
disk the last records were silently skipped (lost timers and journey state); with the disk kept,
the persisted offset lay beyond the "highwater" and the worker crashed with ConsistencyError.

The fix asks the broker the way that is right everywhere: a fetch from the listed offset - 1
returns the partition's true high watermark in its response. On Apache Kafka this only confirms
the listed value; it costs one short-lived consumer per recovery.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import aiokafka
from aiokafka.structs import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams._kafka_security import aiokafka_security_kwargs
from streams._settings import Settings

log = logging.getLogger("polku.recovery")

_PROBE_SECONDS = 10.0


async def fetch_highwaters(
    client_config: Mapping[str, Any], listed: Mapping[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """The high watermark of each partition, from fetch responses: never below `listed`."""
    result = dict(listed)
    if not listed:
        return result
    probe = aiokafka.AIOKafkaConsumer(
        **client_config, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    await probe.start()
    try:
        probe.assign(list(listed))
        for tp, offset in listed.items():
            probe.seek(tp, max(offset - 1, 0))
        pending = set(listed)
        deadline = time.monotonic() + _PROBE_SECONDS
        while pending and time.monotonic() < deadline:
            await probe.getmany(timeout_ms=200, max_records=1)
            for tp in list(pending):
                highwater = probe.highwater(tp)
                if highwater is not None:
                    result[tp] = max(result[tp], highwater)
                    pending.discard(tp)
        if pending:
            log.warning("no fetch highwater for %d partitions; using ListOffsets", len(pending))
    finally:
        await probe.stop()
    corrected = {tp: (listed[tp], hw) for tp, hw in result.items() if hw != listed[tp]}
    if corrected:
        log.info("recovery highwaters corrected from fetches: %s", corrected)
    return result


def install_fetch_highwaters(settings: Settings) -> None:
    """Make Faust's recovery use `fetch_highwaters` (idempotent)."""
    thread_class: Any = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(thread_class, "_polku_fetch_highwaters", False):
        return
    listed_highwaters = thread_class._highwaters
    client_config = aiokafka_client_config(settings)

    async def _highwaters(self: Any, partitions: list[Any]) -> Mapping[Any, int]:
        listed: Mapping[Any, int] = await listed_highwaters(self, partitions)
        if self.consumer.in_transaction:
            return listed  # last stable offsets: not what this fix is about
        fetched = await fetch_highwaters(
            client_config, {TopicPartition(tp.topic, tp.partition): o for tp, o in listed.items()}
        )
        return {tp: fetched[TopicPartition(tp.topic, tp.partition)] for tp in listed}

    thread_class._highwaters = _highwaters
    thread_class._polku_fetch_highwaters = True


def aiokafka_client_config(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap_servers": settings.require_bootstrap().split(","),
        **aiokafka_security_kwargs(settings),
    }


def install_fetch_timing(settings: Settings) -> None:
    """Make the worker's consumer wait at most `settings.fetch_max_wait_ms` in a fetch, and
    hold its next fetch back at most `settings.fetch_prefetch_backoff_ms` for records not taken.

    Faust hard-codes `fetch_max_wait_ms=1500`. A broker that parks an empty fetch for the full
    wait instead of answering when records arrive (Tansu does) then holds every record produced
    meanwhile for up to 1.5 s: at each of the worker's two hops (touchpoints, then the customer
    topic), and for every fired timer.

    aiokafka sends no fetch to a broker while records it fetched from it for any partition are
    not yet taken, for up to its `prefetch_backoff` (0.1 s, not an option of the consumer). At
    a worker's start those were the changelogs' records: Faust pauses a changelog after its
    recovery only in its own books, aiokafka fetched it on, and nothing took what it fetched.
    Every partition of that broker waited: B2's whole tail at 500/s was two or three such
    0.1 s stalls in the first 0.3 s of its run. `_faust_resume.pause_untaken_changelogs` now
    pauses them in aiokafka too, which removed the stalls; this setting stays for a consumer
    that holds untaken records for another reason (docs/performance-log.md).
    """
    thread_class: Any = faust_aiokafka.AIOKafkaConsumerThread
    create = getattr(thread_class, "_polku_original_create", thread_class._create_worker_consumer)
    wait_ms = settings.fetch_max_wait_ms
    backoff_seconds = settings.fetch_prefetch_backoff_ms / 1000

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = wait_ms
        start = consumer.start

        async def start_with_backoff() -> None:
            await start()  # the fetcher is made here
            consumer._fetcher._prefetch_backoff = backoff_seconds

        consumer.start = start_with_backoff
        return consumer

    thread_class._polku_original_create = create
    thread_class._create_worker_consumer = _create_worker_consumer


def committed_offset(consumer: Any, tp: Any) -> int | None:
    """Faust's committed offset of `tp` as this worker last committed or sought to it."""
    offset = consumer._committed_offset.get(tp)
    return int(offset) if offset is not None else None


def read_offset(consumer: Any, tp: Any) -> int | None:
    """Faust's read offset of `tp`: after an assignment the committed offset it sought to (the
    next record to read), later the offset of the last record it handed to a stream."""
    offset = consumer._read_offset.get(tp)
    return int(offset) if offset is not None else None


_RETURNED = "_polku_returned_offsets"


def note_returned(consumer: Any, records: Any) -> None:
    """Note the last offset per partition of a fetch returned to Faust (see `returned_offset`)."""
    if not records:
        return
    returned = consumer.__dict__.setdefault(_RETURNED, {})
    for tp, batch in records.items():
        if batch:
            returned[tp] = int(batch[-1].offset)


def returned_offset(consumer: Any, tp: Any) -> int | None:
    """The offset of the last record of `tp` a fetch has returned to Faust's consumer; those
    after its read offset are still being handed on to the streams."""
    offset: int | None = consumer.__dict__.get(_RETURNED, {}).get(tp)
    return offset
