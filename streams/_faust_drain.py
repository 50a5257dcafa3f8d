"""Faust hands each fetched record to the streams without four tasks per record.

Faust's consumer delivers every record it fetched through
`await self.wait_first(callback(message), self.suspend_flow.wait())`, so that a rebalance
(`suspend_flow`) can interrupt a delivery blocked on a full stream buffer. mode's `wait_first`
makes a task of the delivery, of the suspend event's wait and of two more events, then
`asyncio.wait`s for them and cancels the losers: four tasks and several event-loop turns for
every record, even though a delivery into a buffer with room completes at once. A profile of
the worker showed the stream's input buffer empty at the start of almost every batch: the
agent waited on this loop, not on the broker.

The fix runs the delivery's first step directly. When it completes there (the usual case),
no task is made. When it has to wait (a full buffer), the started delivery goes on inside
Faust's own `wait_first`, interruptible by a rebalance exactly as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any

from faust.transport.consumer import Consumer
from mode.services import WaitResults

_INSTALLED = "_polku_direct_delivery"
_EVENT_WAIT = asyncio.Event.wait.__code__


def install_direct_delivery() -> None:
    """Patch Faust's consumer (idempotent)."""
    if getattr(Consumer, _INSTALLED, False):
        return
    original = Consumer.wait_first

    # the signature of the method it replaces
    async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> WaitResults:  # noqa: ASYNC109
        if not _is_delivery(self, coros, timeout):
            return await original(self, *coros, timeout=timeout)
        delivery, suspended = coros
        try:
            waiting_on = delivery.send(None)
        except StopIteration as done:
            suspended.close()
            return WaitResults([delivery], [done.value], False)
        except BaseException:
            suspended.close()
            raise
        return await original(self, _resume(delivery, waiting_on), suspended, timeout=timeout)

    Consumer.wait_first = wait_first  # type: ignore[method-assign]
    setattr(Consumer, _INSTALLED, True)


def _is_delivery(consumer: Any, coros: tuple[Any, ...], timeout: Any) -> bool:
    """The call in `Consumer._drain_messages`, while no rebalance or stop is under way."""
    if len(coros) != 2 or timeout is not None:
        return False
    delivery, suspended = coros
    return (
        asyncio.iscoroutine(delivery)
        and getattr(suspended, "cr_code", None) is _EVENT_WAIT
        and not consumer.suspend_flow.is_set()
        and not consumer._stopped.is_set()
        and not consumer._crashed.is_set()
    )


async def _resume(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Any:
    return await _Resumed(coro, waiting_on)


class _Resumed:
    """Awaits the rest of a coroutine whose first step already ran and yielded `waiting_on`."""

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting_on: Any) -> None:
        self._coro = coro
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, waiting_on = self._coro, self._waiting_on
        while True:
            try:
                sent = yield waiting_on
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # a cancellation, thrown into the delivery
                try:
                    waiting_on = coro.throw(exc)
                except StopIteration as done:
                    return done.value
                continue
            try:
                waiting_on = coro.send(sent)
            except StopIteration as done:
                return done.value
