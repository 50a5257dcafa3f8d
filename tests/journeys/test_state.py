"""The customer state: `copy_state` (the working copy `advance` changes shares nothing the
engine changes in place), blankness, its timers, and its stored form (`encode_state`,
`decode_state`)."""

from __future__ import annotations

import gc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from journeys import (
    CustomerState,
    InstanceState,
    JourneyRuntimeError,
    PendingSend,
    SentAction,
    decode_state,
    encode_state,
    state_timer,
    stored_state_timers,
)
from journeys._policy import SentRecord
from journeys._state import copy_state, working_copy
from schemas import Action, ContactChannel

AT = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
FIXTURES = Path(__file__).parent.parent / "fixtures"


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
    assert encode_state(copied) == encode_state(state)
    assert decode_state(encode_state(copied)) == state


def test_the_cyclic_collector_tracks_none_of_a_states_structs() -> None:
    # a worker keeps thousands of states; the collector walks what it tracks, and a stream of
    # new customers makes every kept state young (`streams._state_cache`)
    for state in (busy_state(), decode_state(encode_state(busy_state())), copy_state(busy_state())):
        instance = state.instances["post_purchase#o-1"]
        structs = [state, state.contact, instance, instance.last_action, *state.contact.recent]
        assert [type(s).__name__ for s in structs if gc.is_tracked(s)] == []
        # nor a dict that holds only structs and scalars
        assert not gc.is_tracked(state.instances)
        assert not gc.is_tracked(state.last_entry_at)


def test_changing_a_copy_the_way_the_engine_does_leaves_the_original_as_it_was() -> None:
    state = busy_state()
    before = encode_state(state)
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
    assert encode_state(state) == before


def test_a_working_copy_shares_only_the_instances() -> None:
    state = busy_state()
    working = working_copy(state)
    assert working == state
    assert working.instances is not state.instances
    assert all(working.instances[slot] is i for slot, i in state.instances.items())
    for name in ("profile", "entries", "last_entry_at", "finished", "contact"):
        assert getattr(working, name) is not getattr(state, name)
    assert working.contact.recent is not state.contact.recent
    assert working.contact.deferred is not state.contact.deferred


def _with_one_field_of(busy: CustomerState, name: str) -> CustomerState:
    return CustomerState(customer_id="c1", **{name: getattr(busy, name)})


def test_a_state_is_blank_exactly_when_it_equals_a_new_one_for_the_same_customer() -> None:
    busy = busy_state()
    candidates = [
        CustomerState(customer_id="c1"),
        decode_state(encode_state(CustomerState(customer_id="c2"))),
        CustomerState(customer_id="c1", erased=True),
        busy,
        *(
            _with_one_field_of(busy, name)
            for name in CustomerState.__struct_fields__
            if name != "customer_id"
        ),
    ]
    for state in candidates:
        assert state.is_blank() == (state == CustomerState(customer_id=state.customer_id))
    assert [state.is_blank() for state in candidates[:4]] == [True, True, False, False]


def test_a_stored_state_without_timers_has_none_even_where_its_text_mentions_one() -> None:
    state = busy_state()
    assert [t.timer_id for t in stored_state_timers(encode_state(state))] == ["t-1"]
    instance = state.instances["post_purchase#o-1"]
    instance.timer_id = instance.wake_at = None
    assert stored_state_timers(encode_state(state)) == []
    # a seen `timer.fired` event names its timer: parsed, and still no timer of this state
    instance.seen["timer_fired"] = {"type": "timer.fired", "payload": {"timer_id": "t-0"}}
    assert b'"timer_id":' in encode_state(state)
    assert stored_state_timers(encode_state(state)) == []


def test_a_timer_looked_up_in_a_state_is_for_the_customer_it_is_stored_under() -> None:
    state = busy_state()
    [stored] = stored_state_timers(encode_state(state))
    # merged profiles: a state may be stored under its survivor's key
    assert state_timer(state, "t-1", "c2") == stored.timer("c2")
    assert state_timer(state, "t-1", "c1") == stored.timer("c1")
    assert state_timer(state, "t-0", "c1") is None


# --- the stored form -------------------------------------------------------------------------

# A state as the pydantic models stored it until 2026-12-06: every field, `None`s left out.
PYDANTIC_STORED = (FIXTURES / "states" / "pydantic_2026-12-06.json").read_bytes()


def _deferred_sms() -> PendingSend:
    action = Action(
        action_id="b" * 32,
        customer_id="c1",
        journey="post_purchase",
        journey_version=1,
        instance_id="i-1",
        step_id="sms",
        channel=ContactChannel.SMS,
        template="coupon",
        params={"code": "X1"},
        triggered_by="e-1",
        created_at=AT,
        not_before=AT + timedelta(hours=9),
    )
    return PendingSend(action=action, requested_channel="sms", on_cap="defer")


def test_a_state_the_pydantic_models_stored_reads_as_the_same_state() -> None:
    expected = busy_state()
    expected.contact.deferred["t-2"] = _deferred_sms()
    state = decode_state(PYDANTIC_STORED)
    assert state == expected
    assert state.contact.deferred["t-2"].action.not_before == AT + timedelta(hours=9)
    # written again without the defaults, and read back the same
    assert decode_state(encode_state(state)) == expected
    assert b'"holdout"' in PYDANTIC_STORED
    assert b'"holdout"' not in encode_state(state)
    assert stored_state_timers(encode_state(state)) == stored_state_timers(PYDANTIC_STORED)
    assert [t.timer_id for t in stored_state_timers(PYDANTIC_STORED)] == ["t-1", "t-2"]


def test_a_state_is_stored_without_the_fields_that_hold_their_defaults() -> None:
    # (a struct default comes from a factory, which msgspec writes out: the contact's `{}`)
    assert encode_state(CustomerState(customer_id="c1")) == b'{"customer_id":"c1","contact":{}}'
    erased = encode_state(CustomerState(customer_id="c1", erased=True))
    assert erased == b'{"customer_id":"c1","contact":{},"erased":true}'
    assert decode_state(b'{"customer_id":"c1"}') == CustomerState(customer_id="c1")


def test_new_states_do_not_share_their_containers() -> None:
    first, second = CustomerState(customer_id="c1"), CustomerState(customer_id="c2")
    first.profile["tier"] = "gold"
    first.contact.recent.append(SentRecord(channel=ContactChannel.SMS, at=AT))
    assert second.profile == {}
    assert second.contact.recent == []


@pytest.mark.parametrize(
    ("stored", "problem"),
    [
        (b"{not json", "malformed"),
        (b'{"instances":{}}', "missing required field `customer_id`"),
        (b'{"customer_id":"c1","tier":"gold"}', "unknown field `tier`"),
        (
            b'{"customer_id":"c1","last_entry_at":{"welcome":"2026-03-02T10:00:00"}}',
            r"timezone.*`\$.last_entry_at\[\.\.\.\]`",
        ),
        (
            PYDANTIC_STORED.replace(b'"on_cap":"defer"', b'"on_cap":"later"'),
            "on_cap",
        ),
    ],
    ids=["not-json", "no-customer", "unknown-field", "naive-time", "bad-deferred-send"],
)
def test_bytes_that_are_not_a_state_are_refused_with_what_is_wrong(
    stored: bytes, problem: str
) -> None:
    with pytest.raises(JourneyRuntimeError, match=f"(?s)not a stored customer state: .*{problem}"):
        decode_state(stored)
