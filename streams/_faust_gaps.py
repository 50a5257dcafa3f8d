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
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from faust.transport.consumer import Consumer, ThreadDelegateConsumer
from faust.types import TP, Message

log = logging.getLogger("polku.consumer")

_INSTALLED = "_polku_gap_guard"


def install_gap_guard() -> None:
    """Patch Faust's consumer so that a fetch jumping past undelivered records is re-read."""
    if getattr(Consumer, _INSTALLED, False):
        return
    _wrap_getmany()
    _wrap_seeks()
    setattr(Consumer, _INSTALLED, True)


def _expected(consumer: Any) -> dict[TP, int]:
    """The next offset each partition should deliver, when known."""
    found: dict[TP, int] | None = consumer.__dict__.get("_polku_expected")
    if found is None:
        found = consumer.__dict__["_polku_expected"] = {}
    return found


def _refetched(consumer: Any) -> dict[TP, int]:
    """Where each partition was last sought back to because of a jump."""
    found: dict[TP, int] | None = consumer.__dict__.get("_polku_refetched")
    if found is None:
        found = consumer.__dict__["_polku_refetched"] = {}
    return found


def _wrap_getmany() -> None:
    getmany = Consumer.getmany

    # the signature of the method it replaces
    async def guarded(self: Any, timeout: float) -> AsyncIterator[tuple[TP, Message]]:  # noqa: ASYNC109
        expected, refetched = _expected(self), _refetched(self)
        sought: set[TP] = set()
        async for tp, message in getmany(self, timeout):
            if tp in sought:
                continue  # the rest of a fetch that jumped: it comes again after the seek
            want = expected.get(tp)
            if (
                want is not None
                and message.offset > want
                and refetched.get(tp) != want
                and self.app.topics.acks_enabled_for(message.topic)
            ):
                log.warning(
                    "%s[%s]: got offset %s where %s was due; reading again from %s",
                    tp.topic,
                    tp.partition,
                    message.offset,
                    want,
                    want,
                )
                refetched[tp] = want
                sought.add(tp)
                await self.seek(tp, want)
                continue
            expected[tp] = message.offset + 1
            yield tp, message

    Consumer.getmany = guarded  # type: ignore[method-assign]


def _wrap_seeks() -> None:
    seek = Consumer.seek
    seek_to_committed = ThreadDelegateConsumer.seek_to_committed

    async def guarded_seek(self: Any, partition: TP, offset: int) -> None:
        await seek(self, partition, offset)
        _expected(self)[partition] = offset

    async def guarded_seek_to_committed(self: Any) -> Mapping[TP, int]:
        committed = await seek_to_committed(self)
        expected = _expected(self)
        for tp, offset in committed.items():
            if offset is not None and offset > 0:
                expected[tp] = offset
            else:
                expected.pop(tp, None)  # read from the reset position: nothing to compare
        return committed

    Consumer.seek = guarded_seek  # type: ignore[method-assign]
    ThreadDelegateConsumer.seek_to_committed = guarded_seek_to_committed  # type: ignore[method-assign]
