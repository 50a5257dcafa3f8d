"""Customers for the oracle tests (chaos, outage, rebalance), and a thread that produces them at a
steady rate while something breaks.

Each test compares the worker's actions with what the pure engine computes offline from the same
events, so the events only need to exercise both ends of a journey: a cart abandoned (reminders
due), and for some customers an order right after it (the journey must end with no reminder).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from schemas import (
    CartAbandoned,
    CartPayload,
    CustomerRef,
    LineItem,
    OrderPlaced,
    OrderPlacedPayload,
    SourceChannel,
    Touchpoint,
)
from streams import Settings, TouchpointProducer

ITEMS = [LineItem(sku="SKU-1", name="Trail shoe", quantity=1, unit_price="89.90")]


def abandoned_cart(
    key: str, customer: CustomerRef, at: datetime, *, buys: bool
) -> list[Touchpoint]:
    """`customer` abandons cart `key` online at `at`; when `buys`, a store order follows 0.5 ms
    later, before any reminder is due. Event, cart and order ids derive from `key`."""
    events: list[Touchpoint] = [
        CartAbandoned(
            event_id=f"cart-{key}",
            occurred_at=at,
            channel=SourceChannel.WEB,
            customer=customer,
            payload=CartPayload(
                cart_id=key,
                items=ITEMS,
                currency="EUR",
                cart_url=f"https://shop.example/cart/{key}",
            ),
        )
    ]
    if buys:
        events.append(
            OrderPlaced(
                event_id=f"order-{key}",
                occurred_at=at + timedelta(microseconds=500),
                channel=SourceChannel.STORE,
                customer=customer,
                payload=OrderPlacedPayload(
                    order_id=key, items=ITEMS, total="89.90", currency="EUR"
                ),
            )
        )
    return events


class Paced(threading.Thread):
    """Calls `one(n)` for n = 0, 1, ... at `per_second` until stopped or `limit`, in a thread."""

    def __init__(self, name: str, per_second: float, limit: int = 100_000) -> None:
        super().__init__(name=name, daemon=True)
        self._per_second = per_second
        self._limit = limit
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.count = 0

    def one(self, n: int) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Called once the schedule is over (in the thread)."""

    def run(self) -> None:
        began = time.monotonic()
        try:
            for n in range(self._limit):
                if self.stopping.is_set():
                    break
                self.one(n)
                self.count = n + 1
                # the schedule, not a speed assumption: wait until the next one is due
                self.stopping.wait(max(0.0, began + (n + 1) / self._per_second - time.monotonic()))
            self.finish()
        except BaseException as exc:  # re-raised by stop()
            self.error = exc

    def stop(self, timeout: float) -> None:
        self.stopping.set()
        if self.ident is None:
            return  # never started
        self.join(timeout)
        assert not self.is_alive(), f"{self.name} did not finish in {timeout}s"
        if self.error is not None:
            raise self.error


class ScenarioProducer(Paced):
    """A channel producing straight to Kafka: `customer(n)`'s events at each tick."""

    def __init__(
        self,
        settings: Settings,
        per_second: float,
        customer: Callable[[int], list[Touchpoint]],
        limit: int = 100_000,
    ) -> None:
        super().__init__("producer", per_second, limit)
        self._producer = TouchpointProducer(settings)
        self._customer = customer
        self.events: list[Touchpoint] = []
        self.delivered = 0

    def one(self, n: int) -> None:
        for event in self._customer(n):
            self._producer.send(event)
            self.events.append(event)

    def finish(self) -> None:
        self.delivered = self._producer.close()
