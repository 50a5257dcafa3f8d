"""Faust's producer flush, made complete: a commit never passes an unwritten changelog record."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from faust.transport import producer as faust_producer

_DRAIN_LIMIT_SECONDS = 120.0


def install_complete_producer_flush() -> None:
    """Make Faust's producer flush wait until every buffered record is handed to the client.

    Faust flushes its producer before it commits offsets (faust-streaming#273), but
    `ProducerBuffer.flush` gives up after 0.1 s without progress, and a record the buffer has
    already dequeued is not yet in the client while its `send` awaits topic metadata. Either
    way the commit could pass table changelog records that were never written: after a crash
    on a new disk, journey state and timers were restored without them. Here the flush waits
    for both, and fails loudly (the commit then does not happen) rather than returning early.
    """
    buffer_class: Any = faust_producer.ProducerBuffer
    if getattr(buffer_class, "_polku_complete_flush", False):
        return
    send_pending = buffer_class._send_pending

    async def _counted_send(self: Any, fut: Any) -> None:
        self._polku_in_flight = getattr(self, "_polku_in_flight", 0) + 1
        try:
            await send_pending(self, fut)
        finally:
            self._polku_in_flight -= 1
            self.message_sent.set()

    async def _complete_flush(self: Any) -> None:
        deadline = time.monotonic() + _DRAIN_LIMIT_SECONDS
        while self.size or getattr(self, "_polku_in_flight", 0):
            if self.should_stop and not getattr(self, "_polku_in_flight", 0):
                # the buffer's own loop has ended: nothing will take these records any more
                raise RuntimeError(f"producer buffer stopped with {self.size} records unsent")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"producer buffer not drained after {_DRAIN_LIMIT_SECONDS:.0f} s "
                    f"({self.size} queued): not committing past unwritten records"
                )
            self.message_sent.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.message_sent.wait(), timeout=0.1)

    buffer_class._send_pending = _counted_send
    buffer_class.flush = _complete_flush
    buffer_class._polku_complete_flush = True
