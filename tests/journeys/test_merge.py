"""Two profiles found to be one person: their journeys, timers, consent and caps merge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from journeys import (
    ContactState,
    CustomerState,
    Engine,
    Journey,
    encode_state,
    library_journeys,
    merge_states,
)
from journeys._policy import SentRecord
from schemas import (
    CartAbandoned,
    CartPayload,
    ContactChannel,
    CustomerRef,
    LineItem,
    SourceChannel,
)

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def cart_v1() -> Journey:
    [journey] = [j for j in library_journeys() if (j.name, j.version) == ("abandoned_cart", 1)]
    return journey


def cart(customer: CustomerRef, event_id: str, at: datetime = T0) -> CartAbandoned:
    return CartAbandoned(
        event_id=event_id,
        occurred_at=at,
        channel=SourceChannel.WEB,
        customer=customer,
        payload=CartPayload(cart_id=f"k-{event_id}", items=[LineItem(sku="s", name="Shoe")]),
    )


ENGINE = Engine([cart_v1()])
ANON = CustomerRef(anonymous_id="cookie-1")


def waiting(key: str, customer: CustomerRef, event_id: str, at: datetime = T0) -> CustomerState:
    return ENGINE.advance(CustomerState(customer_id=key), cart(customer, event_id, at), at).state


def test_an_anonymous_cart_moves_to_the_known_customer_and_its_timer_fires_there() -> None:
    anonymous = waiting("anonymous_id:cookie-1", ANON, "web-1")
    known = CustomerState(customer_id="aino")

    merged = merge_states(known, anonymous, T0 + timedelta(minutes=5))

    [instance] = merged.state.instances.values()
    [timer] = merged.timers
    assert timer.customer_id == "aino"
    assert timer.timer_id == instance.timer_id
    assert timer.due_at == T0 + timedelta(hours=1)
    fired = ENGINE.advance(merged.state, timer.fired_event(timer.due_at), timer.due_at)
    assert [(a.customer_id, a.template) for a in fired.actions] == [("aino", "cart_reminder")]


def test_the_same_journey_on_both_sides_runs_once_the_earlier_entry_wins() -> None:
    earlier = waiting("anonymous_id:cookie-1", ANON, "web-1", T0)
    later = waiting("aino", CustomerRef(customer_id="aino"), "web-2", T0 + timedelta(minutes=20))

    merged = merge_states(later, earlier, T0 + timedelta(minutes=30))
    mirrored = merge_states(earlier, later, T0 + timedelta(minutes=30))

    [kept] = merged.state.instances.values()
    assert kept.instance_id == earlier.instances["abandoned_cart"].instance_id
    assert [i.instance_id for i in mirrored.state.instances.values()] == [kept.instance_id]
    assert merged.cancelled_timers == (later.instances["abandoned_cart"].timer_id,)
    assert [(t.kind, t.reason) for t in merged.transitions] == [("exited", "merged")]
    assert [t.timer_id for t in merged.timers] == [kept.timer_id]


def test_consent_withdrawal_wins_tags_unite_and_sends_count_once() -> None:
    sent = SentRecord(channel=ContactChannel.SMS, at=T0)
    mine = CustomerState(
        customer_id="aino",
        profile={"tags": ["vip"], "timezone": "Europe/Helsinki"},
        contact=ContactState(consent={"sms": {"marketing": True}}, recent=[sent]),
    )
    theirs = CustomerState(
        customer_id="phone:+358401110001",
        profile={"tags": ["reviewer"], "timezone": "UTC", "first_name": "Aino"},
        contact=ContactState(
            consent={"sms": {"marketing": False}, "email": {"marketing": True}}, recent=[sent]
        ),
    )

    state = merge_states(mine, theirs, T0).state

    assert state.contact.consent == {"sms": {"marketing": False}, "email": {"marketing": True}}
    assert state.contact.recent == [sent]
    assert state.profile == {
        "tags": ["reviewer", "vip"],
        "timezone": "Europe/Helsinki",
        "first_name": "Aino",
    }


def test_an_erased_side_stops_the_merge() -> None:
    erased = CustomerState(customer_id="aino", erased=True)
    anonymous = waiting("anonymous_id:cookie-1", ANON, "web-1")
    assert merge_states(erased, anonymous, T0).state == erased
    assert merge_states(anonymous, erased, T0).timers == ()


def test_a_merge_leaves_both_states_it_was_given_as_they_were() -> None:
    # the worker keeps states it has read as models (`streams/_state_cache.py`)
    earlier = waiting("anonymous_id:cookie-1", ANON, "web-1", T0)
    later = waiting("aino", CustomerRef(customer_id="aino"), "web-2", T0 + timedelta(minutes=1))
    later.contact.recent.append(SentRecord(channel=ContactChannel.EMAIL, at=T0))
    before = (encode_state(later), encode_state(earlier))

    merge_states(later, earlier, T0 + timedelta(minutes=5))

    assert (encode_state(later), encode_state(earlier)) == before
