"""`copy_state`: the working copy `advance` changes shares nothing the engine changes in place."""

from __future__ import annotations

from datetime import UTC, datetime

from journeys import CustomerState, InstanceState, SentAction, state_timer, stored_state_timers
from journeys._policy import SentRecord
from journeys._state import copy_state
from schemas import ContactChannel, encode

AT = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def busy_state() -> CustomerState:
    trigger = {"type": "order.placed", "payload": {"order_id": "o-1", "items": [{"sku": "A"}]}}
    instance = InstanceState(
        journey="post_purchase",
        version=1,
        instance_id="i-1",
        slot="post_purchase#o-1",
        step_id="awaiting_delivery",
        entered_at=AT,
        trigger=trigger,
        vars={"n": 1},
        seen={"order_placed": trigger},
        timer_id="t-1",
        wake_at=AT,
        variants={"subject": "a"},
        last_action=SentAction(action_id="a" * 32, step_id="s", channel="email", template="t"),
    )
    state = CustomerState(
        customer_id="c1",
        instances={instance.slot: instance},
        profile={"tags": ["vip"], "timezone": "Europe/Helsinki"},
        entries={"post_purchase": 1},
        last_entry_at={"post_purchase": AT},
        finished={"welcome": 1},
    )
    state.contact.set_consent("sms", "marketing", True)
    state.contact.recent.append(SentRecord(channel=ContactChannel.SMS, at=AT))
    return state


def test_a_copy_is_equal_and_encodes_to_the_same_bytes() -> None:
    state = busy_state()
    copied = copy_state(state)
    assert copied == state
    assert encode(copied) == encode(state)
    assert CustomerState.model_validate_json(encode(copied)) == state


def test_changing_a_copy_the_way_the_engine_does_leaves_the_original_as_it_was() -> None:
    state = busy_state()
    before = encode(state)
    copied = copy_state(state)
    instance = copied.instances["post_purchase#o-1"]
    instance.step_id, instance.timer_id, instance.wake_at = "after_delivery", None, None
    instance.vars["n"] = 2
    instance.seen["delivery_status"] = {"type": "delivery.status"}
    instance.variants["subject"] = "b"
    copied.instances.pop("post_purchase#o-1")
    copied.profile["tags"] = ["vip", "reviewer"]
    copied.entries["post_purchase"] = 2
    copied.last_entry_at["welcome"] = AT
    copied.finished["post_purchase"] = 1
    copied.contact.set_consent("sms", "marketing", False)
    copied.contact.set_consent("email", "marketing", True)
    copied.contact.recent.clear()
    copied.contact.deferred.clear()
    assert encode(state) == before


def _with_one_field_of(busy: CustomerState, name: str) -> CustomerState:
    return CustomerState(customer_id="c1", **{name: getattr(busy, name)})


def test_a_state_is_blank_exactly_when_it_equals_a_new_one_for_the_same_customer() -> None:
    busy = busy_state()
    candidates = [
        CustomerState(customer_id="c1"),
        CustomerState.model_validate_json(encode(CustomerState(customer_id="c2"))),
        CustomerState(customer_id="c1", erased=True),
        busy,
        *(
            _with_one_field_of(busy, name)
            for name in CustomerState.model_fields
            if name != "customer_id"
        ),
    ]
    for state in candidates:
        assert state.is_blank() == (state == CustomerState(customer_id=state.customer_id))
    assert [state.is_blank() for state in candidates[:4]] == [True, True, False, False]


def test_a_stored_state_without_timers_has_none_even_where_its_text_mentions_one() -> None:
    state = busy_state()
    assert [t.timer_id for t in stored_state_timers(encode(state))] == ["t-1"]
    instance = state.instances["post_purchase#o-1"]
    instance.timer_id = instance.wake_at = None
    assert stored_state_timers(encode(state)) == []
    # a seen `timer.fired` event names its timer: parsed, and still no timer of this state
    instance.seen["timer_fired"] = {"type": "timer.fired", "payload": {"timer_id": "t-0"}}
    assert b'"timer_id":' in encode(state)
    assert stored_state_timers(encode(state)) == []


def test_a_timer_looked_up_in_a_state_is_for_the_customer_it_is_stored_under() -> None:
    state = busy_state()
    [stored] = stored_state_timers(encode(state))
    # merged profiles: a state may be stored under its survivor's key
    assert state_timer(state, "t-1", "c2") == stored.timer("c2")
    assert state_timer(state, "t-1", "c1") == stored.timer("c1")
    assert state_timer(state, "t-0", "c1") is None
