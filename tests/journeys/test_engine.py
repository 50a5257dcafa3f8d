"""The engine on the library abandoned-cart journey, at a fixed clock: pure and deterministic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from journeys import (
    CustomerState,
    Engine,
    Journey,
    JourneyRuntimeError,
    Outcome,
    Timer,
    encode_state,
    library_journeys,
    load_journey_file,
)
from schemas import (
    Action,
    CartAbandoned,
    CartPayload,
    ContactChannel,
    CustomerRef,
    LineItem,
    OrderPlaced,
    OrderPlacedPayload,
    ProductViewed,
    ProductViewedPayload,
    SourceChannel,
    Touchpoint,
    action_id_for,
)

JOURNEY = "abandoned_cart"
NOW = datetime(2025, 3, 14, 18, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(hours=24)
CUSTOMER_ID = "cust-1"
PHONE = "+358401234567"
ITEMS = [
    LineItem(sku="SKU-1", name="Wool sweater", quantity=2, unit_price=Decimal("59.90"), size="M"),
    LineItem(sku="SKU-2", name="Scarf"),
]


def cart_v1() -> Journey:
    """The library's abandoned-cart journey, version 1 (the one these tests were written for)."""
    [journey] = [j for j in library_journeys() if (j.name, j.version) == (JOURNEY, 1)]
    return journey


def engine() -> Engine:
    return Engine([cart_v1()])


def fresh_state() -> CustomerState:
    return CustomerState(customer_id=CUSTOMER_ID)


def cart_abandoned(
    event_id: str = "ev-cart-1",
    *,
    phone: str | None = PHONE,
    items: list[LineItem] | None = None,
    at: datetime = NOW,
) -> CartAbandoned:
    return CartAbandoned(
        event_id=event_id,
        occurred_at=at,
        channel=SourceChannel.WEB,
        customer=CustomerRef(customer_id=CUSTOMER_ID, email="anna@example.com", phone=phone),
        payload=CartPayload(
            cart_id="cart-1",
            items=ITEMS if items is None else items,
            total=Decimal("119.80"),
            currency="EUR",
            cart_url="https://shop.example/cart/cart-1",
        ),
    )


def order_placed(
    channel: SourceChannel = SourceChannel.WEB, at: datetime = NOW, event_id: str = "ev-order-1"
) -> OrderPlaced:
    return OrderPlaced(
        event_id=event_id,
        occurred_at=at,
        channel=channel,
        customer=CustomerRef(customer_id=CUSTOMER_ID),
        payload=OrderPlacedPayload(
            order_id="order-1", items=ITEMS, total=Decimal("119.80"), currency="EUR"
        ),
    )


def only_timer(outcome: Outcome) -> Timer:
    assert len(outcome.timers) == 1, outcome.timers
    return outcome.timers[0]


def only_action(outcome: Outcome) -> Action:
    assert len(outcome.actions) == 1, outcome.actions
    return outcome.actions[0]


def fire(run: Engine, state: CustomerState, timer: Timer) -> Outcome:
    """Deliver a timer's `timer.fired` event exactly at its due time."""
    return run.advance(state, timer.fired_event(timer.due_at), timer.due_at)


def entered(run: Engine, event: Touchpoint | None = None) -> Outcome:
    return run.advance(fresh_state(), event or cart_abandoned(), NOW)


def after_reminder(run: Engine, event: Touchpoint | None = None) -> tuple[Outcome, Outcome]:
    """The entry outcome and the outcome of the first timer (the email reminder)."""
    entry = entered(run, event)
    return entry, fire(run, entry.state, only_timer(entry))


# -- entry -----------------------------------------------------------------------------------


def test_the_library_journey_is_loaded() -> None:
    assert [journey.name for journey in engine().journeys] == [JOURNEY]


def test_entry_schedules_one_timer_an_hour_later_and_sends_nothing() -> None:
    outcome = entered(engine())
    assert outcome.actions == ()
    assert outcome.cancelled_timers == ()
    timer = only_timer(outcome)
    assert timer.due_at == NOW + HOUR
    assert timer.customer_id == CUSTOMER_ID
    assert (timer.journey, timer.journey_version) == (JOURNEY, 1)
    assert timer.step_id == "wait_before_reminder"
    instance = outcome.state.instances[JOURNEY]
    assert instance.step_id == "wait_before_reminder"
    assert instance.timer_id == timer.timer_id
    assert instance.instance_id == timer.instance_id
    assert instance.entered_at == NOW
    assert outcome.state.finished == {}
    assert [t.kind for t in outcome.transitions] == ["entered", "step", "waiting"]


def test_advance_does_not_change_the_given_state() -> None:
    state = fresh_state()
    outcome = engine().advance(state, cart_abandoned(), NOW)
    assert state == fresh_state()
    assert state.instances == {}
    assert outcome.state is not state


def product_viewed() -> ProductViewed:
    return ProductViewed(
        event_id="ev-view",
        occurred_at=NOW,
        channel=SourceChannel.APP,
        customer=CustomerRef(customer_id=CUSTOMER_ID),
        payload=ProductViewedPayload(sku="SKU-1"),
    )


def test_an_unrelated_event_does_nothing() -> None:
    outcome = engine().advance(fresh_state(), product_viewed(), NOW)
    assert outcome == Outcome(state=fresh_state())


def test_an_unrelated_event_leaves_a_running_instance_as_it_was() -> None:
    waiting = entered(engine()).state
    outcome = engine().advance(waiting, product_viewed(), NOW + HOUR / 2)
    assert outcome == Outcome(state=waiting)
    assert outcome.state is not waiting
    # an instance is copied only to be changed (`Run.own`): this one is shared
    assert outcome.state.instances[JOURNEY] is waiting.instances[JOURNEY]


def viewed(sku: str, n: int) -> ProductViewed:
    return ProductViewed(
        event_id=f"ev-view-{n}",
        occurred_at=NOW + n * HOUR,
        channel=SourceChannel.APP,
        customer=CustomerRef(customer_id=CUSTOMER_ID),
        payload=ProductViewedPayload(sku=sku),
    )


def test_an_event_copies_only_the_instance_it_changes_the_given_state_unchanged() -> None:
    # browse_abandonment runs one instance per product viewed
    [browse] = [j for j in library_journeys() if j.name == "browse_abandonment"]
    browsing = Engine([browse])
    state = fresh_state()
    for n, sku in enumerate(["SKU-1", "SKU-2"]):
        state = browsing.advance(state, viewed(sku, n), NOW + n * HOUR).state
    given = encode_state(state)

    outcome = browsing.advance(state, viewed("SKU-1", 2), NOW + 2 * HOUR)

    first, second = "browse_abandonment#SKU-1", "browse_abandonment#SKU-2"
    assert outcome.state.instances[first].step_id == "third_view"
    assert outcome.state.instances[first] is not state.instances[first]
    assert outcome.state.instances[second] is state.instances[second]
    assert state.instances[first].step_id == "second_view"
    assert encode_state(state) == given


def test_an_empty_cart_does_not_enter() -> None:
    outcome = entered(engine(), cart_abandoned(items=[]))
    assert outcome == Outcome(state=fresh_state())


def test_an_order_without_a_running_instance_does_nothing() -> None:
    outcome = engine().advance(fresh_state(), order_placed(), NOW)
    assert outcome == Outcome(state=fresh_state())


# -- the reminder ----------------------------------------------------------------------------


def test_the_timer_sends_one_email_reminder_with_the_cart_items() -> None:
    run = engine()
    entry, reminder = after_reminder(run)
    action = only_action(reminder)
    assert action.channel is ContactChannel.EMAIL
    assert action.template == "cart_reminder"
    assert action.step_id == "email_reminder"
    assert action.params["items"] == [
        item.model_dump(mode="json", exclude_none=True) for item in ITEMS
    ]
    assert action.params["items"] == [
        {"sku": "SKU-1", "name": "Wool sweater", "quantity": 2, "unit_price": "59.90", "size": "M"},
        {"sku": "SKU-2", "name": "Scarf", "quantity": 1},
    ]
    assert action.params["cart_id"] == "cart-1"
    assert action.params["cart_url"] == "https://shop.example/cart/cart-1"
    assert action.customer_id == CUSTOMER_ID
    assert action.instance_id == entry.state.instances[JOURNEY].instance_id
    assert action.created_at == NOW + HOUR
    assert action.not_before == NOW + HOUR
    timer = only_timer(entry)
    assert action.triggered_by == timer.fired_event(timer.due_at).event_id


def test_the_reminder_schedules_the_coupon_a_day_later() -> None:
    _, reminder = after_reminder(engine())
    timer = only_timer(reminder)
    assert timer.step_id == "wait_before_coupon"
    assert timer.due_at == NOW + HOUR + DAY
    assert reminder.state.instances[JOURNEY].timer_id == timer.timer_id
    assert reminder.cancelled_timers == ()


def test_the_action_id_is_derived_from_the_journey_instance_step_and_event() -> None:
    entry, reminder = after_reminder(engine())
    action = only_action(reminder)
    assert action.action_id == action_id_for(
        journey=JOURNEY,
        journey_version=1,
        customer_id=CUSTOMER_ID,
        instance_id=entry.state.instances[JOURNEY].instance_id,
        step_id="email_reminder",
        triggered_by=action.triggered_by,
    )


def test_a_late_timer_sends_with_the_time_it_is_processed() -> None:
    run = engine()
    entry = entered(run)
    timer = only_timer(entry)
    late = timer.due_at + timedelta(minutes=7)
    outcome = run.advance(entry.state, timer.fired_event(late), late)
    action = only_action(outcome)
    assert action.created_at == late
    assert only_timer(outcome).due_at == late + DAY


# -- the coupon SMS --------------------------------------------------------------------------


def test_the_second_timer_sends_the_sms_coupon_and_completes() -> None:
    run = engine()
    _, reminder = after_reminder(run)
    coupon = fire(run, reminder.state, only_timer(reminder))
    action = only_action(coupon)
    assert action.channel is ContactChannel.SMS
    assert action.template == "cart_coupon"
    assert action.step_id == "sms_coupon"
    assert action.params == {"cart_id": "cart-1", "coupon_code": "CART10", "discount_percent": 10}
    assert coupon.timers == ()
    assert coupon.state.instances == {}
    assert coupon.state.finished == {JOURNEY: 1}
    assert coupon.transitions[-1].kind == "completed"


def test_a_customer_without_phone_gets_only_the_email_and_completes() -> None:
    run = engine()
    _, reminder = after_reminder(run, cart_abandoned(phone=None))
    assert only_action(reminder).template == "cart_reminder"
    last = fire(run, reminder.state, only_timer(reminder))
    assert last.actions == ()
    assert last.timers == ()
    assert last.state.instances == {}
    assert last.state.finished == {JOURNEY: 1}
    assert [t.step_id for t in last.transitions if t.kind == "step"] == ["has_phone", "done"]
    assert last.transitions[-1].kind == "completed"


def test_action_ids_differ_across_steps() -> None:
    run = engine()
    _, reminder = after_reminder(run)
    coupon = fire(run, reminder.state, only_timer(reminder))
    email, sms = only_action(reminder), only_action(coupon)
    assert email.instance_id == sms.instance_id
    assert email.action_id != sms.action_id


def test_timer_ids_differ_across_steps() -> None:
    entry, reminder = after_reminder(engine())
    assert only_timer(entry).timer_id != only_timer(reminder).timer_id


# -- exit on order ---------------------------------------------------------------------------


@pytest.mark.parametrize("channel", [SourceChannel.WEB, SourceChannel.APP, SourceChannel.STORE])
def test_an_order_before_the_hour_cancels_the_journey(channel: SourceChannel) -> None:
    run = engine()
    entry = entered(run)
    timer = only_timer(entry)
    in_store_soon = NOW + timedelta(minutes=20)
    order = run.advance(entry.state, order_placed(channel, in_store_soon), in_store_soon)
    assert order.actions == ()
    assert order.timers == ()
    assert order.cancelled_timers == (timer.timer_id,)
    assert order.state.instances == {}
    assert order.state.finished == {JOURNEY: 1}
    assert order.transitions[-1].kind == "exited"
    assert order.transitions[-1].reason == "exit_on order.placed"

    # the shell may still fire the timer (it was in flight, or cancelling it failed): ignored
    stale = fire(run, order.state, timer)
    assert stale == Outcome(state=order.state)


def test_an_order_between_reminder_and_sms_cancels_the_sms() -> None:
    run = engine()
    _, reminder = after_reminder(run)
    coupon_timer = only_timer(reminder)
    order = run.advance(reminder.state, order_placed(SourceChannel.STORE), NOW + 2 * HOUR)
    assert order.cancelled_timers == (coupon_timer.timer_id,)
    assert order.actions == ()
    assert order.state.instances == {}
    stale = fire(run, order.state, coupon_timer)
    assert stale.actions == ()
    assert stale.timers == ()
    assert stale.state == order.state


def test_an_order_after_completion_does_nothing() -> None:
    run = engine()
    _, reminder = after_reminder(run)
    done = fire(run, reminder.state, only_timer(reminder))
    order = run.advance(done.state, order_placed(), NOW + 3 * DAY)
    assert order == Outcome(state=done.state)


# -- at-least-once delivery: duplicates and re-processing -----------------------------------


def test_reprocessing_the_same_event_from_the_same_state_is_identical() -> None:
    run = engine()
    first_entry, second_entry = entered(run), entered(engine())
    assert first_entry == second_entry
    timer = only_timer(first_entry)
    first = fire(run, first_entry.state, timer)
    again = fire(run, first_entry.state, timer)
    assert first == again
    assert only_action(first).action_id == only_action(again).action_id
    assert only_action(first) == only_action(again)


def test_a_duplicate_timer_delivery_after_processing_emits_nothing() -> None:
    run = engine()
    entry, reminder = after_reminder(run)
    first_timer = only_timer(entry)
    duplicate = fire(run, reminder.state, first_timer)
    assert duplicate == Outcome(state=reminder.state)

    coupon = fire(run, reminder.state, only_timer(reminder))
    duplicate_coupon = fire(run, coupon.state, only_timer(reminder))
    assert duplicate_coupon == Outcome(state=coupon.state)
    assert duplicate_coupon.state.finished == {JOURNEY: 1}


def test_a_second_cart_abandoned_while_running_does_not_start_another_instance() -> None:
    run = engine()
    entry = entered(run)
    again = run.advance(entry.state, cart_abandoned("ev-cart-2"), NOW + timedelta(minutes=30))
    assert again.timers == ()
    assert again.actions == ()
    assert again.state == entry.state


def test_a_redelivered_trigger_while_running_changes_nothing() -> None:
    run = engine()
    entry = entered(run)
    again = run.advance(entry.state, cart_abandoned(), NOW + timedelta(seconds=5))
    assert again == Outcome(state=entry.state)


def test_a_second_cart_after_the_reminder_does_not_restart_the_journey() -> None:
    run = engine()
    _, reminder = after_reminder(run)
    again = run.advance(reminder.state, cart_abandoned("ev-cart-2"), NOW + 2 * HOUR)
    assert again == Outcome(state=reminder.state)


def test_a_redelivered_trigger_after_completion_repeats_the_same_action_ids() -> None:
    # the instance id is derived from the triggering event, so a replay re-runs the same instance
    # and every action it emits carries the same id: senders drop it as a duplicate
    run = engine()
    entry, reminder = after_reminder(run, cart_abandoned(phone=None))
    done = fire(run, reminder.state, only_timer(reminder))
    replay_entry = run.advance(done.state, cart_abandoned(phone=None), NOW)
    replay_reminder = fire(run, replay_entry.state, only_timer(replay_entry))
    assert only_timer(replay_entry).timer_id == only_timer(entry).timer_id
    assert only_action(replay_reminder).action_id == only_action(reminder).action_id


def test_a_new_cart_after_completion_starts_a_new_instance() -> None:
    run = engine()
    _, reminder = after_reminder(run, cart_abandoned(phone=None))
    done = fire(run, reminder.state, only_timer(reminder))
    assert done.state.finished == {JOURNEY: 1}
    later = NOW + 7 * DAY
    second_entry = run.advance(done.state, cart_abandoned("ev-cart-2", at=later), later)
    second_reminder = fire(run, second_entry.state, only_timer(second_entry))
    assert only_action(second_reminder).action_id != only_action(reminder).action_id
    assert (
        second_entry.state.instances[JOURNEY].instance_id
        != reminder.state.instances[JOURNEY].instance_id
    )
    last = fire(run, second_reminder.state, only_timer(second_reminder))
    assert last.state.finished == {JOURNEY: 2}


def test_finished_counts_completions_and_exits() -> None:
    run = engine()
    entry = entered(run)
    exited = run.advance(entry.state, order_placed(), NOW + HOUR / 2)
    assert exited.state.finished == {JOURNEY: 1}
    second = run.advance(exited.state, cart_abandoned("ev-cart-2"), NOW + HOUR)
    assert second.state.finished == {JOURNEY: 1}
    reminder = fire(run, second.state, only_timer(second))
    assert reminder.state.finished == {JOURNEY: 1}
    done = fire(run, reminder.state, only_timer(reminder))
    assert done.state.finished == {JOURNEY: 2}


def test_different_customers_get_different_ids() -> None:
    run = engine()
    mine = entered(run)
    theirs = run.advance(CustomerState(customer_id="cust-2"), cart_abandoned(), NOW)
    assert only_timer(mine).timer_id != only_timer(theirs).timer_id
    assert mine.state.instances[JOURNEY].instance_id != theirs.state.instances[JOURNEY].instance_id


# -- versions --------------------------------------------------------------------------------


def version_two(tmp_path: Path) -> Path:
    library_file = Path(cart_v1().source)
    document = yaml.safe_load(library_file.read_text(encoding="utf-8"))
    document["version"] = 2
    for step in document["steps"]:
        if step["id"] == "wait_before_reminder":
            step["duration"] = "PT2H"
    path = tmp_path / "abandoned_cart_v2.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def test_new_entrants_get_the_latest_version_and_running_instances_keep_theirs(
    tmp_path: Path,
) -> None:
    v1_entry = entered(engine())
    both = Engine([cart_v1(), load_journey_file(version_two(tmp_path))])
    assert [(j.name, j.version) for j in both.journeys] == [(JOURNEY, 2)]

    reminder = fire(both, v1_entry.state, only_timer(v1_entry))
    assert only_action(reminder).journey_version == 1
    assert only_timer(reminder).journey_version == 1

    fresh = both.advance(CustomerState(customer_id="cust-2"), cart_abandoned(), NOW)
    assert fresh.state.instances[JOURNEY].version == 2
    assert only_timer(fresh).due_at == NOW + 2 * HOUR


def test_an_instance_on_an_unloaded_version_is_an_error(tmp_path: Path) -> None:
    v2_only = Engine([load_journey_file(version_two(tmp_path))])
    v1_entry = entered(engine())
    with pytest.raises(JourneyRuntimeError, match="version 1 is not loaded"):
        fire(v2_only, v1_entry.state, only_timer(v1_entry))


def test_an_instance_on_an_unloaded_version_is_an_error_whatever_the_event(
    tmp_path: Path,
) -> None:
    """Also for an event no version of its journey reacts to: the engine skips journeys by
    event type, but not the check that every running instance can go on."""
    v2_only = Engine([load_journey_file(version_two(tmp_path))])
    v1_entry = entered(engine())
    with pytest.raises(JourneyRuntimeError, match="version 1 is not loaded"):
        v2_only.advance(v1_entry.state, product_viewed(), NOW)
