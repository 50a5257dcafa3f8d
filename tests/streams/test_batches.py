"""The worker's batches: staged state, sends acked before anything is saved; the shortcut.

In-process, with dict tables and topics whose acks the test controls: what the Faust shell adds
around this (take_events, commits, changelogs) is covered by the integration tests.
"""

from __future__ import annotations

import asyncio
import functools
import gc
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from msgspec.structs import replace

from journeys import (
    CustomerState,
    Engine,
    Timer,
    decode_state,
    encode_state,
    load_journeys,
    pending_timers,
)
from schemas import (
    CartAbandoned,
    CartPayload,
    CustomerRef,
    LineItem,
    OrderPlaced,
    OrderPlacedPayload,
    ProductViewed,
    ProductViewedPayload,
    SourceChannel,
    Touchpoint,
    decode_action,
    encode,
)
from streams import Settings
from streams._decode_ahead import DecodedAhead
from streams._identity import IdentityProcessor
from streams._metrics import AGENT_PHASES, WorkerMetrics
from streams._shortcut import Backlog, Shortcut, TrackedTopic, partition_for
from streams._staging import Event, Outbox
from streams._state_cache import StateCache
from streams._worker import JourneyProcessor, Pipeline
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
        self, key: bytes | None, value: bytes, headers: Any = None
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
    actions: dict[str, Topic]
    current: list[int]

    def run(self, events: list[Event]) -> None:
        def set_event(event: Event | None) -> None:
            self.current.append(event.message.offset if event is not None else -1)

        asyncio.run(self.processor.handle_batch(events, set_event))

    def timers(self) -> list[Timer]:
        """The timers the stored states wait on: the only record of them."""
        stored = (decode_state(v) for v in self.states.values())
        return [timer for state in stored for timer in pending_timers(state)]

    def action_ids(self) -> list[str]:
        return [decode_action(v).action_id for t in self.actions.values() for _, v in t.sent]


def make_rig(states: dict[bytes, bytes] | None = None) -> Rig:
    states = {} if states is None else states
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
        clock=lambda: START,
    )
    return Rig(processor, states, actions, [])


@pytest.fixture
def rig() -> Rig:
    return make_rig()


def test_events_of_one_customer_in_one_batch_see_each_others_state(rig: Rig) -> None:
    # the order ends the cart journey the cart in the same batch started: nothing is left
    rig.run(batch(cart("aino", 1), order("aino", 2), cart("eero", 3)))
    aino = decode_state(rig.states[b"aino"])
    eero = decode_state(rig.states[b"eero"])
    assert not any(i.journey == "cart_fast" for i in aino.instances.values())
    assert [i.journey for i in eero.instances.values()] == ["cart_fast"]
    # eero's reminder; aino's was cancelled in the same batch
    [reminder] = rig.timers()
    assert reminder.customer_id == "eero"
    assert [d.timer_id for d in rig.processor.index.pop_due(START + timedelta(days=1), 10)] == [
        reminder.timer_id
    ]


def test_nothing_is_saved_until_the_sends_are_acked_and_a_retry_sends_the_same_ids(
    rig: Rig,
) -> None:
    rig.run(batch(cart("aino", 1)))
    due = rig.processor.index.pop_due(START + timedelta(minutes=1), 10)
    assert len(due) == 1
    [timer] = rig.timers()
    assert (timer.timer_id, timer.customer_id) == (due[0].timer_id, due[0].customer_id)
    fired = timer.fired_event(START + timedelta(minutes=1))
    saved_state = dict(rig.states)

    rig.actions["email"].failing = True
    with pytest.raises(ConnectionError):
        rig.run(batch(fired))
    assert rig.states == saved_state
    first_try = rig.action_ids()
    assert first_try

    rig.actions["email"].failing = False
    rig.run(batch(fired))
    assert rig.action_ids() == first_try * 2  # the same action again: senders dedupe it
    assert rig.states != saved_state


def test_a_state_changed_in_the_table_is_read_from_the_table_not_from_memory(rig: Rig) -> None:
    rig.run(batch(cart("aino", 1)))
    sent = len(rig.action_ids())
    # what a recovery or a rebalance can do: the table now holds another state for aino
    rig.states[b"aino"] = encode_state(CustomerState(customer_id="aino", erased=True))
    rig.run(batch(order("aino", 2), cart("aino", 3)))
    assert len(rig.action_ids()) == sent  # erased: nothing more is sent to aino
    assert decode_state(rig.states[b"aino"]).erased


def test_each_write_is_made_in_the_context_of_the_event_that_made_it(rig: Rig) -> None:
    rig.run(batch(cart("aino", 1), cart("eero", 2)))
    # two events processed, then the state of each (which holds its timer) written in turn
    assert rig.current == [0, 1, 0, 1]


class CountingTable(dict[bytes, bytes]):
    """A states table that counts the writes made to it."""

    writes = 0

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.writes += 1
        super().__setitem__(key, value)

    def __delitem__(self, key: bytes) -> None:
        self.writes += 1
        super().__delitem__(key)


def viewed(customer: str, n: int) -> ProductViewed:
    return ProductViewed(
        event_id=f"view-{customer}-{n}",
        occurred_at=START + timedelta(seconds=n),
        channel=SourceChannel.WEB,
        customer=CustomerRef(customer_id=customer),
        payload=ProductViewedPayload(sku="SKU-1"),
    )


def test_an_event_that_changes_no_state_writes_nothing_and_a_later_change_is_written() -> None:
    table = CountingTable()
    rig = make_rig(table)
    rig.run(batch(cart("aino", 1)))
    assert table.writes == 1
    stored = table[b"aino"]

    # no journey of these starts on a product view or waits for one
    rig.run(batch(viewed("aino", 2), viewed("aino", 3), order("eero", 4)))
    assert table.writes == 1
    assert table[b"aino"] == stored
    assert b"eero" not in table  # nothing was ever kept of eero: nothing to write either

    rig.run(batch(viewed("aino", 5), order("aino", 6)))  # the order ends aino's cart journey
    assert table.writes == 2
    assert not decode_state(table[b"aino"]).instances


# ---------------------------------------------------------------------------------------------
# the worker's one agent: the identity step hands touchpoints on directly or via the topic


class CustomerTopic:
    """The customer topic as the worker sends to it: acks at the partition's next offset."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, int, int]] = []
        self.ends: dict[int, int] = {}
        self.failing = False

    async def send(self, **kwargs: Any) -> asyncio.Future[Any]:
        partition = kwargs["partition"]
        offset = self.ends.get(partition, 0)
        self.ends[partition] = offset + 1
        self.sent.append((kwargs["key"], partition, offset))
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.failing:
            ack.set_exception(ConnectionError("broker unreachable"))
        else:
            ack.set_result(SimpleNamespace(offset=offset))
        return ack


@dataclass
class PipelineRig:
    pipeline: Pipeline
    journeys: JourneyProcessor
    states: dict[bytes, bytes]
    customers: CustomerTopic
    email: Topic
    settings: Settings
    clock: list[datetime]
    links: Topic  # the identity topic: the identity step's control records
    dead_letter: Topic
    send_now_calls: list[None]  # one per time the outbox had the producer send at once

    def run(self, *messages: Message) -> None:
        events: list[Any] = [FakeEvent(m) for m in messages]
        asyncio.run(self.pipeline.handle_batch(events, lambda _: None))

    def fire(self, at: datetime) -> int:
        """What the agent does after a batch, or when woken: fire what is due at `at`."""
        self.clock[0] = at
        limit = self.pipeline._settings.timer_batch_max
        return asyncio.run(self.pipeline.fire_due_timers(lambda _: None, limit))

    def touchpoint(self, event: Touchpoint, partition: int | None = None) -> Message:
        key = event.customer.key.encode()
        at = partition_for(key, PARTITIONS) if partition is None else partition
        return Message(self.settings.touchpoints_topic, at, 0, key, encode(event))

    def from_customer_topic(self, key: bytes, partition: int, offset: int, value: bytes) -> Message:
        return Message(self.settings.customer_topic, partition, offset, key, value)


PARTITIONS = 4


@pytest.fixture
def pipeline() -> PipelineRig:
    return pipeline_rig()


def pipeline_rig() -> PipelineRig:
    settings = Settings(partitions=PARTITIONS)
    metrics = WorkerMetrics()
    states: dict[bytes, bytes] = {}
    customers = CustomerTopic()
    clock = [START]
    email = Topic()
    # the customer topic's highwater: what this rig has sent there
    backlog = Backlog(highwater=lambda p: customers.ends.get(p, 0), start=lambda _: 0)
    tracked = TrackedTopic(customers, PARTITIONS, backlog)
    # one outbox, one batch of touchpoints decoded ahead, for both steps, as build_app's
    send_now_calls: list[None] = []

    def send_now() -> None:
        send_now_calls.append(None)

    outbox = Outbox(waited=functools.partial(metrics.phases.add, "settle"), send_now=send_now)
    decoded = DecodedAhead()
    dead_letter = Topic()
    journeys = JourneyProcessor(
        settings,
        Engine(load_journeys(FAST_JOURNEYS)),
        metrics,
        customer_topic=tracked,
        dead_letter=dead_letter,
        suppressed=Topic(),
        action_topics={"email": email}
        | {n: Topic() for n in ("sms", "push", "offer", "staff_task")},
        states=states,
        clock=lambda: clock[0],
        outbox=outbox,
        decoded=decoded,
    )
    shortcut = Shortcut(journeys.handle_touchpoint, backlog, tracked, PARTITIONS, outbox, metrics)
    links = Topic()
    identity = IdentityProcessor(
        raw_topic=Topic(),
        identity_topic=links,
        customer_topic=tracked,
        aliases={},
        dead_letter=journeys.send_to_dead_letter,
        metrics=metrics,
        deliver=shortcut.deliver,
        outbox=outbox,
        decoded=decoded,
    )
    pipeline = Pipeline(settings, identity, journeys, backlog)
    return PipelineRig(
        pipeline,
        journeys,
        states,
        customers,
        email,
        settings,
        clock,
        links,
        dead_letter,
        send_now_calls,
    )


def instances(rig: PipelineRig, customer: bytes) -> list[str]:
    if customer not in rig.states:
        return []
    state = decode_state(rig.states[customer])
    return [i.journey for i in state.instances.values()]


def with_identifiers(event: Touchpoint, **identifiers: str) -> Touchpoint:
    customer = CustomerRef(customer_id=event.customer.customer_id, **identifiers)
    return event.model_copy(update={"customer": customer})


def test_an_identifier_seen_with_the_customer_is_linked_once_not_with_every_event(
    pipeline: PipelineRig,
) -> None:
    with_email = with_identifiers(cart("aino", 1), email="aino@example.com")
    pipeline.run(pipeline.touchpoint(with_email))
    assert pipeline.links.sent == [(b"email:aino@example.com", b"aino")]
    pipeline.run(pipeline.touchpoint(with_identifiers(cart("aino", 2), email="aino@example.com")))
    pipeline.run(pipeline.touchpoint(cart("aino", 3)))
    assert pipeline.links.sent == [(b"email:aino@example.com", b"aino")]
    # a new identifier beside the known one: only the new one is linked
    both = with_identifiers(cart("aino", 4), email="aino@example.com", phone="+358401234567")
    pipeline.run(pipeline.touchpoint(both))
    assert pipeline.links.sent[1:] == [(b"phone:+358401234567", b"aino")]


def test_a_touchpoint_keyed_by_its_customer_goes_to_the_journey_step_at_once(
    pipeline: PipelineRig,
) -> None:
    pipeline.run(pipeline.touchpoint(cart("aino", 1)))
    assert instances(pipeline, b"aino") == ["cart_fast"]
    assert pipeline.customers.sent == []


def test_a_record_that_is_no_touchpoint_is_dead_lettered_in_its_batch_and_the_rest_go_on(
    pipeline: PipelineRig,
) -> None:
    broken = replace_value(pipeline.touchpoint(cart("eero", 2)), b'{"type": "cart.abandoned"')
    pipeline.run(pipeline.touchpoint(cart("aino", 1)), broken, pipeline.touchpoint(cart("kai", 3)))
    assert pipeline.dead_letter.sent == [(b"eero", b'{"type": "cart.abandoned"')]
    assert instances(pipeline, b"aino") == instances(pipeline, b"kai") == ["cart_fast"]
    assert instances(pipeline, b"eero") == []


def test_a_batch_that_took_all_that_was_queued_has_its_records_sent_at_once(
    pipeline: PipelineRig,
) -> None:
    broken = replace_value(pipeline.touchpoint(cart("eero", 2)), b"{")
    pipeline.run(pipeline.touchpoint(cart("aino", 1)), broken)
    # fewer events than the agent takes at most: nothing more was queued
    assert len(pipeline.send_now_calls) == 1  # the dead letter, without the producer's linger
    assert pipeline.dead_letter.sent == [(b"eero", b"{")]


def test_a_full_batch_leaves_its_records_to_the_producer_s_linger(pipeline: PipelineRig) -> None:
    # as many events as the agent takes at most: more are queued, the next batch follows
    pipeline.pipeline._settings = Settings(partitions=PARTITIONS, batch_max_events=2)
    broken = replace_value(pipeline.touchpoint(cart("eero", 2)), b"{")
    pipeline.run(pipeline.touchpoint(cart("aino", 1)), broken)
    assert pipeline.send_now_calls == []
    assert pipeline.dead_letter.sent == [(b"eero", b"{")]  # acked before the batch saved
    assert instances(pipeline, b"aino") == ["cart_fast"]


def test_fired_timers_have_their_records_sent_at_once(pipeline: PipelineRig) -> None:
    pipeline.pipeline._settings = Settings(partitions=PARTITIONS, batch_max_events=1)
    pipeline.run(pipeline.touchpoint(cart("aino", 1)))
    assert pipeline.send_now_calls == []  # a full batch, and it produced nothing
    assert pipeline.fire(REMINDER_DUE) == 1
    assert len(pipeline.send_now_calls) == 1  # the reminder, as soon as it is due
    assert [key for key, _ in pipeline.email.sent] == [b"aino"]


def replace_value(message: Message, value: bytes) -> Message:
    return Message(message.topic, message.partition, message.offset, message.key, value)


def test_a_touchpoint_sent_round_by_the_topic_is_acked_before_its_batch_is_done(
    pipeline: PipelineRig,
) -> None:
    home = partition_for(b"aino", PARTITIONS)
    pipeline.customers.failing = True
    elsewhere = pipeline.touchpoint(cart("aino", 1), partition=(home + 1) % PARTITIONS)
    # the batch fails, so it is not acked and its records are read again
    with pytest.raises(ConnectionError):
        pipeline.run(elsewhere)
    pipeline.customers.failing = False
    pipeline.run(elsewhere)
    assert [key for key, _, _ in pipeline.customers.sent] == [b"aino", b"aino"]


def test_a_touchpoint_never_overtakes_an_earlier_one_of_its_customer_on_the_topic(
    pipeline: PipelineRig,
) -> None:
    home = partition_for(b"aino", PARTITIONS)
    # a channel that partitions by another hash: the record must go round by the topic
    pipeline.run(pipeline.touchpoint(cart("aino", 1), partition=(home + 1) % PARTITIONS))
    assert [(key, p) for key, p, _ in pipeline.customers.sent] == [(b"aino", home)]
    assert instances(pipeline, b"aino") == []
    # aino's next event must queue behind it; eero, on the same partition, need not
    pipeline.run(pipeline.touchpoint(order("aino", 2)), pipeline.touchpoint(cart("eero", 3)))
    assert [key for key, _, _ in pipeline.customers.sent] == [b"aino", b"aino"]
    assert instances(pipeline, b"eero") == ["cart_fast"]
    # the journey step reads both from the topic, in order: the order ends the cart journey
    first, second = pipeline.customers.sent
    pipeline.run(
        pipeline.from_customer_topic(b"aino", home, first[2], encode(cart("aino", 1))),
        pipeline.from_customer_topic(b"aino", home, second[2], encode(order("aino", 2))),
    )
    assert instances(pipeline, b"aino") == []
    # with nothing of aino's left unread, the shortcut is open to aino again
    pipeline.run(pipeline.touchpoint(cart("aino", 4)))
    assert len(pipeline.customers.sent) == 2
    assert instances(pipeline, b"aino") == ["cart_fast"]


# ---------------------------------------------------------------------------------------------
# due timers, fired in the agent


REMINDER_DUE = START + timedelta(seconds=2)  # cart_fast waits 2 s from when the cart is processed


def test_a_due_timer_fires_in_the_agent_when_nothing_of_its_customer_waits_on_the_topic(
    pipeline: PipelineRig,
) -> None:
    pipeline.run(pipeline.touchpoint(cart("aino", 1)))
    assert pipeline.fire(REMINDER_DUE - timedelta(milliseconds=1)) == 0  # not due yet

    assert pipeline.fire(REMINDER_DUE) == 1

    [(key, value)] = pipeline.email.sent
    assert key == b"aino"
    assert decode_action(value).step_id == "email_reminder"
    assert pipeline.customers.sent == []  # no `timer.fired` record went round by the topic
    state = decode_state(pipeline.states[b"aino"])
    [instance] = state.instances.values()
    assert instance.step_id == "wait_before_coupon"  # saved: the next wait is armed
    assert pipeline.fire(REMINDER_DUE + timedelta(seconds=1)) == 0  # fired once only


def test_a_due_timer_takes_the_topic_behind_a_record_of_its_customer_waiting_there(
    pipeline: PipelineRig,
) -> None:
    pipeline.run(pipeline.touchpoint(cart("aino", 1)))
    home = partition_for(b"aino", PARTITIONS)
    # aino's order, from a channel that partitions by another hash, waits on the topic
    pipeline.run(pipeline.touchpoint(order("aino", 2), partition=(home + 1) % PARTITIONS))
    assert len(pipeline.customers.sent) == 1

    assert pipeline.fire(REMINDER_DUE) == 1

    # the timer's event queues behind the order, which will end the journey before it
    assert [(key, p) for key, p, _ in pipeline.customers.sent] == [(b"aino", home)] * 2
    assert pipeline.email.sent == []
    state = decode_state(pipeline.states[b"aino"])
    assert [i.step_id for i in state.instances.values()] == ["wait_before_reminder"]


def test_fired_timers_whose_sends_fail_are_kept_and_fire_again_with_the_same_ids(
    pipeline: PipelineRig,
) -> None:
    pipeline.run(pipeline.touchpoint(cart("aino", 1)))
    saved = dict(pipeline.states)
    pipeline.email.failing = True

    assert pipeline.fire(REMINDER_DUE) == 0

    assert pipeline.states == saved
    first_try = [decode_action(v).action_id for _, v in pipeline.email.sent]
    pipeline.email.failing = False
    assert pipeline.fire(REMINDER_DUE + timedelta(seconds=1)) == 1
    again = [decode_action(v).action_id for _, v in pipeline.email.sent]
    assert again == first_try * 2  # the same action: senders drop the second
    assert pipeline.states != saved


def test_fired_timers_are_not_saved_when_a_revoke_comes_while_they_wait_for_acks(
    pipeline: PipelineRig,
) -> None:
    pipeline.run(pipeline.touchpoint(cart("aino", 1)))
    saved = dict(pipeline.states)
    journeys = pipeline.journeys
    settle = journeys.outbox.settle

    async def revoked_meanwhile(at_once: bool = True) -> None:
        journeys.forget_partitions()  # what the revoke handler does, during the wait
        await settle(at_once)

    journeys.outbox.settle = revoked_meanwhile  # type: ignore[method-assign]

    assert pipeline.fire(REMINDER_DUE) == 0

    assert len(pipeline.email.sent) == 1  # sent, and sent again by the partition's next owner
    assert pipeline.states == saved  # whose restored state still holds the timer
    assert len(journeys.index) == 0  # not put back: the index is the new assignment's
    asyncio.run(journeys.timers_settled())  # and the revoke handler is not kept waiting


def test_more_due_timers_than_a_batch_wake_the_agent_again(pipeline: PipelineRig) -> None:
    few = Settings(partitions=PARTITIONS, timer_batch_max=2)
    pipeline.pipeline._settings = few
    pipeline.run(*(pipeline.touchpoint(cart(name, 1)) for name in ("aino", "eero", "kaisa")))

    assert pipeline.fire(REMINDER_DUE) == 2
    assert pipeline.pipeline.timers_due.is_set()  # the third is taken after the next batch
    pipeline.pipeline.timers_due.clear()
    assert pipeline.fire(REMINDER_DUE) == 1
    assert not pipeline.pipeline.timers_due.is_set()
    assert sorted(key or b"" for key, _ in pipeline.email.sent) == [b"aino", b"eero", b"kaisa"]


def test_an_idle_agent_fires_due_timers_in_batches_of_their_own_size(
    pipeline: PipelineRig,
) -> None:
    # a burst's actions all go out before any of its states is saved: the fewer batches, the
    # sooner its last action
    pipeline.pipeline._settings = Settings(
        partitions=PARTITIONS, batch_max_events=2, timer_batch_max=4
    )
    pipeline.run(*(pipeline.touchpoint(cart(name, 1)) for name in ("aino", "eero", "kaisa")))

    idle_turn(pipeline, REMINDER_DUE)

    assert len(pipeline.email.sent) == 3
    assert not pipeline.pipeline.timers_due.is_set()


def test_records_are_handled_with_the_collector_paused_and_timers_fired_without(
    pipeline: PipelineRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a collection inside a batch walks everything the batch holds; for a burst of fired
    # timers the pause did not help (`streams._gc`)
    collecting: list[tuple[str, bool]] = []
    route, fire = pipeline.pipeline._route, pipeline.pipeline.fire_due_timers

    async def routed(message: Any) -> None:
        collecting.append(("record", gc.isenabled()))
        await route(message)

    async def fired(set_event: Any, limit: int) -> int:
        collecting.append(("timers", gc.isenabled()))
        return await fire(set_event, limit)

    monkeypatch.setattr(pipeline.pipeline, "_route", routed)
    monkeypatch.setattr(pipeline.pipeline, "fire_due_timers", fired)
    records: list[Any] = [FakeEvent(pipeline.touchpoint(cart("aino", 1)))]
    assert gc.isenabled()

    asyncio.run(pipeline.pipeline.take_batch(records, lambda _: None))
    asyncio.run(pipeline.pipeline.take_batch([], lambda _: None))

    assert collecting == [("record", False), ("timers", True), ("timers", True)]
    assert gc.isenabled()
    assert instances(pipeline, b"aino") == ["cart_fast"]


def test_after_records_no_more_timers_fire_than_an_input_batch_holds(
    pipeline: PipelineRig,
) -> None:
    # so that a burst of due timers does not hold the input up
    pipeline.pipeline._settings = Settings(
        partitions=PARTITIONS, batch_max_events=2, timer_batch_max=4
    )
    pipeline.run(*(pipeline.touchpoint(cart(name, 1)) for name in ("aino", "eero", "kaisa")))
    pipeline.clock[0] = REMINDER_DUE
    records: list[Any] = [FakeEvent(pipeline.touchpoint(cart("ilmari", 2)))]

    asyncio.run(pipeline.pipeline.after_batch(records, lambda _: None))

    assert len(pipeline.email.sent) == 2
    assert pipeline.pipeline.timers_due.is_set()  # the third after the next batch


def test_no_timer_fires_while_flow_control_is_off(pipeline: PipelineRig) -> None:
    pipeline.run(pipeline.touchpoint(cart("aino", 1)))
    pipeline.pipeline._may_fire = lambda: False  # a rebalance under way

    assert pipeline.fire(REMINDER_DUE) == 0

    assert pipeline.email.sent == []
    assert len(pipeline.journeys.index) == 1


def test_fired_timers_cancelled_while_they_wait_for_acks_go_back_into_the_index(
    pipeline: PipelineRig,
) -> None:
    # Faust cancels the agent when the worker stops, or to restart it
    pipeline.run(pipeline.touchpoint(cart("aino", 1)))
    saved = dict(pipeline.states)

    async def cancelled(at_once: bool = True) -> None:
        raise asyncio.CancelledError

    pipeline.journeys.outbox.settle = cancelled  # type: ignore[method-assign]

    with pytest.raises(asyncio.CancelledError):
        pipeline.fire(REMINDER_DUE)

    assert pipeline.states == saved
    assert len(pipeline.journeys.index) == 1
    asyncio.run(pipeline.journeys.timers_settled())


# ---------------------------------------------------------------------------------------------
# the states of timers about to fall due, decoded ahead by an idle agent


def idle_turn(rig: PipelineRig, at: datetime) -> None:
    """What the agent does when woken with no records: fire what is due, else warm states."""
    rig.clock[0] = at
    asyncio.run(rig.pipeline.after_batch([], lambda _: None))


def restarted_cache(rig: PipelineRig, capacity: int = 100) -> StateCache:
    """An empty state cache, as after a restart (the carts' own saves filled it)."""
    cache = StateCache(capacity)
    rig.journeys._decoded = cache
    return cache


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    decoded: list[bytes] = []
    validate = decode_state

    def counting(data: bytes) -> CustomerState:
        decoded.append(data)
        return validate(data)

    monkeypatch.setattr("streams._state_cache.decode_state", counting)
    return decoded


def test_an_idle_agent_decodes_the_states_of_timers_about_to_fall_due(
    pipeline: PipelineRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline.run(*(pipeline.touchpoint(cart(name, 1)) for name in ("aino", "eero")))
    cache = restarted_cache(pipeline)
    soon = REMINDER_DUE - timedelta(seconds=pipeline.settings.timer_warm_seconds / 2)
    pipeline.clock[0] = soon
    assert pipeline.journeys.states_to_warm()

    idle_turn(pipeline, soon)

    assert len(cache) == 2
    assert not pipeline.journeys.states_to_warm()
    assert pipeline.email.sent == []  # warmed, not fired
    decodes = count_decodes(monkeypatch)
    assert pipeline.fire(REMINDER_DUE) == 2
    assert decodes == []  # both fired from the states decoded ahead
    assert sorted(key or b"" for key, _ in pipeline.email.sent) == [b"aino", b"eero"]


def test_timers_beyond_the_look_ahead_are_not_warmed(pipeline: PipelineRig) -> None:
    pipeline.run(pipeline.touchpoint(cart("aino", 1)))
    cache = restarted_cache(pipeline)
    early = REMINDER_DUE - timedelta(seconds=pipeline.settings.timer_warm_seconds + 1)

    idle_turn(pipeline, early)

    assert len(cache) == 0


def test_warming_never_takes_more_states_than_the_cache_keeps(pipeline: PipelineRig) -> None:
    names = ("aino", "eero", "kaisa")
    pipeline.run(*(pipeline.touchpoint(cart(name, 1)) for name in names))
    cache = restarted_cache(pipeline, capacity=2)
    pipeline.journeys._settings = Settings(partitions=PARTITIONS, state_cache_customers=2)

    idle_turn(pipeline, REMINDER_DUE - timedelta(seconds=1))

    assert len(cache) == 2
    assert not pipeline.journeys.states_to_warm()  # a third would push a warmed one out
    assert pipeline.fire(REMINDER_DUE) == 3  # the third decodes its state as it fires


def test_a_state_changed_after_it_was_warmed_is_read_again_when_its_timer_falls_due(
    pipeline: PipelineRig,
) -> None:
    pipeline.run(pipeline.touchpoint(cart("aino", 1)))
    restarted_cache(pipeline)
    idle_turn(pipeline, REMINDER_DUE - timedelta(seconds=1))
    # another writer (a restore, a merge) leaves aino with no journey: the warmed state is stale
    pipeline.states[b"aino"] = encode_state(CustomerState(customer_id="aino"))

    assert pipeline.fire(REMINDER_DUE) == 0

    assert pipeline.email.sent == []


def test_no_state_is_warmed_with_the_look_ahead_off(pipeline: PipelineRig) -> None:
    pipeline.run(pipeline.touchpoint(cart("aino", 1)))
    cache = restarted_cache(pipeline)
    pipeline.journeys._settings = Settings(partitions=PARTITIONS, timer_warm_seconds=0)

    idle_turn(pipeline, REMINDER_DUE - timedelta(seconds=1))

    assert len(cache) == 0
    assert not pipeline.journeys.states_to_warm()


def test_a_busy_agent_does_not_warm_states(pipeline: PipelineRig) -> None:
    pipeline.run(pipeline.touchpoint(cart("aino", 1)))
    cache = restarted_cache(pipeline)
    pipeline.clock[0] = REMINDER_DUE - timedelta(seconds=1)
    events: list[Any] = [FakeEvent(pipeline.touchpoint(cart("eero", 2)))]

    asyncio.run(pipeline.pipeline.after_batch(events, lambda _: None))

    assert len(cache) == 0


# ---------------------------------------------------------------------------------------------
# a timer on time is processed as of its due time; an idle agent works its firing out ahead


def sent_at(rig: PipelineRig) -> list[datetime]:
    return [decode_action(value).created_at for _, value in rig.email.sent]


def test_a_timer_fired_on_time_is_processed_as_of_its_due_time(pipeline: PipelineRig) -> None:
    pipeline.run(pipeline.touchpoint(cart("aino", 1)))
    on_time = pipeline.settings.timer_on_time_seconds

    assert pipeline.fire(REMINDER_DUE + timedelta(seconds=on_time)) == 1

    assert sent_at(pipeline) == [REMINDER_DUE]  # not when the busy worker got to it


def test_a_timer_fired_late_is_processed_as_of_when_it_fires(pipeline: PipelineRig) -> None:
    pipeline.run(pipeline.touchpoint(cart("aino", 1)))
    late = REMINDER_DUE + timedelta(seconds=pipeline.settings.timer_on_time_seconds + 1)

    assert pipeline.fire(late) == 1

    assert sent_at(pipeline) == [late]  # an outage's delay: quiet hours etc. judged at `late`


def count_advances(rig: PipelineRig, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    events: list[str] = []
    advance = rig.journeys._engine.advance

    def counting(state: CustomerState, event: Touchpoint, now: datetime, **options: Any) -> Any:
        events.append(event.type)
        return advance(state, event, now, **options)

    monkeypatch.setattr(rig.journeys._engine, "advance", counting)
    return events


FIRED_AHEAD = "polku_timers_fired_ahead_total"


def counted(rig: PipelineRig) -> dict[str, float]:
    """The worker's counters and gauges, summed per sample name (not its timings)."""
    sums: dict[str, float] = {}
    for family in rig.journeys._metrics.registry.collect():
        if family.type in ("counter", "gauge"):
            for sample in family.samples:
                if not sample.name.endswith("_created"):  # when the series was made
                    sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    sums.pop("polku_worker_agent_seconds_total", None)  # a timing too
    return sums


def agent_seconds(rig: PipelineRig) -> dict[str, float]:
    """`polku_worker_agent_seconds_total` by phase."""
    return {
        sample.labels["phase"]: sample.value
        for family in rig.journeys._metrics.registry.collect()
        if family.name == "polku_worker_agent_seconds"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def test_the_agent_counts_where_its_time_goes_by_phase_once_a_batch_is_done(
    pipeline: PipelineRig,
) -> None:
    take_batch = pipeline.pipeline.take_batch
    events: list[Any] = [FakeEvent(pipeline.touchpoint(cart("aino", 1)))]
    asyncio.run(take_batch(events, lambda _: None))
    after_cart = agent_seconds(pipeline)
    pipeline.clock[0] = REMINDER_DUE + timedelta(seconds=1)
    asyncio.run(take_batch([], lambda _: None))  # woken: the reminder falls due and is sent
    spent = agent_seconds(pipeline)

    assert len(pipeline.email.sent) == 1
    assert sorted(spent) == sorted(AGENT_PHASES)
    parts = {phase: seconds for phase, seconds in spent.items() if phase != "agent"}
    assert all(seconds > 0 for seconds in parts.values()), sorted(spent.items())
    assert sum(parts.values()) <= spent["agent"]  # the parts do not overlap
    assert after_cart["settle"] == 0  # the cart sent nothing: no acks to wait for
    assert spent["decode"] == after_cart["decode"] > 0  # a fired timer is not decoded
    assert spent["advance"] > after_cart["advance"] > 0


def test_an_idle_agent_works_out_the_firing_of_timers_about_to_fall_due(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = ("aino", "eero")
    computed = pipeline_rig()  # the same carts, their reminders computed as they fire
    computed.run(*(computed.touchpoint(cart(name, 1)) for name in names))
    assert computed.fire(REMINDER_DUE + timedelta(seconds=1)) == 2
    rig = pipeline_rig()
    rig.run(*(rig.touchpoint(cart(name, 1)) for name in names))
    idle_turn(rig, REMINDER_DUE - timedelta(seconds=1))
    advances = count_advances(rig, monkeypatch)

    assert rig.fire(REMINDER_DUE + timedelta(seconds=1)) == 2

    assert advances == []  # only sent and saved as they fell due
    assert rig.email.sent == computed.email.sent  # byte for byte what firing computes
    assert rig.states == computed.states
    ahead, on_the_spot = counted(rig), counted(computed)
    assert (ahead.pop(FIRED_AHEAD), on_the_spot.pop(FIRED_AHEAD)) == (2, 0)
    assert ahead == on_the_spot  # and the same metrics moved
    assert ahead["polku_journey_steps_total"] > 0
    assert rig.fire(REMINDER_DUE + timedelta(seconds=2)) == 0  # and not again


def test_a_firing_worked_out_ahead_is_computed_again_when_its_timer_fires_late(
    pipeline: PipelineRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline.run(pipeline.touchpoint(cart("aino", 1)))
    idle_turn(pipeline, REMINDER_DUE - timedelta(seconds=1))
    advances = count_advances(pipeline, monkeypatch)
    late = REMINDER_DUE + timedelta(seconds=pipeline.settings.timer_on_time_seconds + 1)

    assert pipeline.fire(late) == 1

    assert advances == ["timer.fired"]
    assert sent_at(pipeline) == [late]
    assert counted(pipeline)[FIRED_AHEAD] == 0


def test_a_timer_cancelled_after_its_firing_was_worked_out_does_not_fire(
    pipeline: PipelineRig,
) -> None:
    pipeline.run(pipeline.touchpoint(cart("aino", 1)))
    idle_turn(pipeline, REMINDER_DUE - timedelta(seconds=1))
    pipeline.run(pipeline.touchpoint(order("aino", 2)))  # the order ends the journey

    assert pipeline.fire(REMINDER_DUE) == 0

    assert pipeline.email.sent == []
    assert pipeline.journeys._prepared == {}


def test_a_firing_worked_out_from_a_state_replaced_since_is_computed_again(
    pipeline: PipelineRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline.run(pipeline.touchpoint(cart("aino", 1)))
    idle_turn(pipeline, REMINDER_DUE - timedelta(seconds=1))
    # another writer (a restore, a merge) replaced aino's state: same timer, now erased
    state = decode_state(pipeline.states[b"aino"])
    pipeline.states[b"aino"] = encode_state(replace(state, erased=True))
    advances = count_advances(pipeline, monkeypatch)

    pipeline.fire(REMINDER_DUE)

    assert advances == ["timer.fired"]  # from the state the table holds now
    assert pipeline.email.sent == []  # which the outcome worked out ahead would have sent to
    assert counted(pipeline)[FIRED_AHEAD] == 0


def test_a_timer_armed_after_a_look_ahead_is_worked_out_at_a_later_one(
    pipeline: PipelineRig,
) -> None:
    # a look ahead of 5 s: the next look (after a fifth of it) comes before aino's reminder
    pipeline.journeys._settings = Settings(partitions=PARTITIONS, timer_warm_seconds=5)
    pipeline.run(pipeline.touchpoint(cart("aino", 1)))
    idle_turn(pipeline, START)
    assert set(pipeline.journeys._prepared) == set(pipeline.journeys._warmed)
    assert len(pipeline.journeys._prepared) == 1
    pipeline.clock[0] = START + timedelta(milliseconds=500)
    pipeline.run(pipeline.touchpoint(cart("eero", 2)))  # due within the window looked at
    assert not pipeline.journeys.states_to_warm()  # not looked at again so soon

    later = START + timedelta(seconds=1)
    pipeline.clock[0] = later
    assert pipeline.journeys.states_to_warm()
    idle_turn(pipeline, later)

    assert len(pipeline.journeys._prepared) == 2
