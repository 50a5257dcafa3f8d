"""The journey agent's batches: staged state, sends acked before anything is saved.

In-process, with dict tables and topics whose acks the test controls: what the Faust shell adds
around this (take_events, commits, changelogs) is covered by the integration tests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from journeys import CustomerState, Engine, Timer, load_journeys
from schemas import (
    CartAbandoned,
    CartPayload,
    CustomerRef,
    LineItem,
    OrderPlaced,
    OrderPlacedPayload,
    SourceChannel,
    Touchpoint,
    decode_action,
    encode,
)
from streams import Settings
from streams._metrics import WorkerMetrics
from streams._staging import Event
from streams._worker import JourneyProcessor
from tests.integration.harness import FAST_JOURNEYS

START = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ITEMS = [LineItem(sku="SKU-1", name="Trail shoe")]


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: float = 0.0


@dataclass
class FakeEvent:
    message: Message


class Topic:
    """Records what was sent; acks each send, or fails it when `failing` is set."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes]] = []
        self.failing = False

    async def send(
        self, key: bytes | None, value: bytes, headers: Any = None, force: bool = False
    ) -> asyncio.Future[None]:
        self.sent.append((key, value))
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failing:
            ack.set_exception(ConnectionError("broker unreachable"))
        else:
            ack.set_result(None)
        return ack


def cart(customer: str, n: int) -> CartAbandoned:
    return CartAbandoned(
        event_id=f"cart-{customer}-{n}",
        occurred_at=START + timedelta(seconds=n),
        channel=SourceChannel.WEB,
        customer=CustomerRef(customer_id=customer),
        payload=CartPayload(cart_id=f"k-{customer}", items=ITEMS),
    )


def order(customer: str, n: int) -> OrderPlaced:
    return OrderPlaced(
        event_id=f"order-{customer}-{n}",
        occurred_at=START + timedelta(seconds=n),
        channel=SourceChannel.STORE,
        customer=CustomerRef(customer_id=customer),
        payload=OrderPlacedPayload(order_id=f"o-{n}", items=ITEMS, total="10", currency="EUR"),
    )


def batch(*touchpoints: Touchpoint) -> list[Event]:
    return [
        FakeEvent(Message("by-customer", 0, n, (t.customer.customer_id or "").encode(), encode(t)))  # type: ignore[misc]
        for n, t in enumerate(touchpoints)
    ]


@dataclass
class Rig:
    processor: JourneyProcessor
    states: dict[bytes, bytes]
    timers: dict[bytes, bytes]
    actions: dict[str, Topic]
    current: list[int]

    def run(self, events: list[Event]) -> None:
        def set_event(event: Event | None) -> None:
            self.current.append(event.message.offset if event is not None else -1)

        asyncio.run(self.processor.handle_batch(events, set_event))

    def action_ids(self) -> list[str]:
        return [decode_action(v).action_id for t in self.actions.values() for _, v in t.sent]


@pytest.fixture
def rig() -> Rig:
    states: dict[bytes, bytes] = {}
    timers: dict[bytes, bytes] = {}
    actions = {name: Topic() for name in ("email", "sms", "push", "offer", "staff_task", "webhook")}
    processor = JourneyProcessor(
        Settings(),
        Engine(load_journeys(FAST_JOURNEYS)),
        WorkerMetrics(),
        customer_topic=Topic(),
        dead_letter=Topic(),
        suppressed=Topic(),
        action_topics=actions,
        states=states,
        timers=timers,
        clock=lambda: START,
    )
    return Rig(processor, states, timers, actions, [])


def test_events_of_one_customer_in_one_batch_see_each_others_state(rig: Rig) -> None:
    # the order ends the cart journey the cart in the same batch started: nothing is left
    rig.run(batch(cart("aino", 1), order("aino", 2), cart("eero", 3)))
    aino = CustomerState.model_validate_json(rig.states[b"aino"])
    eero = CustomerState.model_validate_json(rig.states[b"eero"])
    assert not any(i.journey == "cart_fast" for i in aino.instances.values())
    assert [i.journey for i in eero.instances.values()] == ["cart_fast"]
    assert len(rig.timers) == 1  # eero's reminder; aino's was cancelled in the same batch
    assert len(rig.processor.index) == 1


def test_nothing_is_saved_until_the_sends_are_acked_and_a_retry_sends_the_same_ids(
    rig: Rig,
) -> None:
    rig.run(batch(cart("aino", 1)))
    due = rig.processor.index.pop_due(START + timedelta(minutes=1), 10)
    assert len(due) == 1
    timer = Timer.model_validate_json(rig.timers[due[0].timer_id.encode()])
    fired = timer.fired_event(START + timedelta(minutes=1))
    saved_state, saved_timers = dict(rig.states), dict(rig.timers)

    rig.actions["email"].failing = True
    with pytest.raises(ConnectionError):
        rig.run(batch(fired))
    assert rig.states == saved_state
    assert rig.timers == saved_timers
    first_try = rig.action_ids()
    assert first_try

    rig.actions["email"].failing = False
    rig.run(batch(fired))
    assert rig.action_ids() == first_try * 2  # the same action again: senders dedupe it
    assert rig.states != saved_state


def test_each_write_is_made_in_the_context_of_the_event_that_made_it(rig: Rig) -> None:
    rig.run(batch(cart("aino", 1), cart("eero", 2)))
    # two events processed, then the timer of each and the state of each written in turn
    assert rig.current == [0, 1, 0, 1, 0, 1]


class WriteLog(dict[bytes, bytes]):
    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__()
        self.name, self.log = name, log

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.log.append(self.name)
        super().__setitem__(key, value)


def test_a_timer_is_written_before_the_state_that_waits_on_it(rig: Rig) -> None:
    written: list[str] = []
    rig.processor._timers.table = WriteLog("timer", written)
    rig.processor._states.table = WriteLog("state", written)
    rig.run(batch(cart("aino", 1)))
    assert written == ["timer", "state"]
