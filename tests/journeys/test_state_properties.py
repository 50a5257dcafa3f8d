"""Property-based tests of the stored state: whatever a state holds (the JSON documents events
and journeys put in it, times at any offset), `decode_state(encode_state(state))` is the same
state, its encoding is stable, and the timers read from its bytes are the state's own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journeys import (
    ContactState,
    CustomerState,
    InstanceState,
    SentAction,
    decode_state,
    document_timers,
    encode_state,
    pending_timers,
    stored_state_timers,
)
from journeys._policy import SentRecord
from schemas import ContactChannel

# what an event's JSON (orjson, then pydantic's JSON-mode dump) or a journey's rendered value
# can hold: no NaN or infinity, which JSON cannot carry
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
DOCUMENT = st.dictionaries(st.text(max_size=8), JSON, max_size=4)
NAMES = st.text(min_size=1, max_size=12)
OFFSETS = st.sampled_from(
    [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]
)
TIMES = st.builds(
    lambda moment, zone: moment.replace(tzinfo=UTC).astimezone(zone),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    OFFSETS,
)


@st.composite
def instances(draw: st.DrawFn) -> InstanceState:
    waiting = draw(st.booleans())
    return InstanceState(
        journey=draw(NAMES),
        version=draw(st.integers(min_value=1, max_value=99)),
        instance_id=draw(NAMES),
        slot=draw(NAMES),
        step_id=draw(NAMES),
        entered_at=draw(TIMES),
        trigger=draw(DOCUMENT),
        vars=draw(DOCUMENT),
        seen=draw(st.dictionaries(NAMES, DOCUMENT, max_size=2)),
        timer_id=draw(NAMES) if waiting else None,
        wake_at=draw(TIMES) if waiting else None,
        holdout=draw(st.booleans()),
        variants=draw(st.dictionaries(NAMES, NAMES, max_size=2)),
        last_action=draw(
            st.none()
            | st.builds(SentAction, action_id=NAMES, step_id=NAMES, channel=NAMES, template=NAMES)
        ),
    )


@st.composite
def states(draw: st.DrawFn) -> CustomerState:
    held = draw(st.lists(instances(), max_size=3))
    records = st.builds(SentRecord, st.sampled_from(list(ContactChannel)), TIMES)
    return CustomerState(
        customer_id=draw(NAMES),
        instances={instance.slot: instance for instance in held},
        profile=draw(DOCUMENT),
        entries=draw(st.dictionaries(NAMES, st.integers(min_value=0, max_value=10**6))),
        last_entry_at=draw(st.dictionaries(NAMES, TIMES, max_size=3)),
        finished=draw(st.dictionaries(NAMES, st.integers(min_value=0, max_value=10**6))),
        contact=ContactState(
            consent=draw(st.dictionaries(NAMES, st.dictionaries(NAMES, st.booleans(), max_size=2))),
            recent=draw(st.lists(records, max_size=3)),
        ),
        erased=draw(st.booleans()),
    )


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(states())
def test_a_state_reads_back_as_itself_from_its_stored_bytes(state: CustomerState) -> None:
    stored = encode_state(state)
    again = decode_state(stored)
    assert again == state
    assert encode_state(again) == stored
    # the same instants, though a time may come back in another zone object of its offset
    for slot, instance in state.instances.items():
        assert again.instances[slot].entered_at.utcoffset() == instance.entered_at.utcoffset()


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(states())
def test_the_timers_read_from_the_bytes_are_the_states_own(state: CustomerState) -> None:
    stored = encode_state(state)
    expected = sorted(pending_timers(state), key=lambda t: t.timer_id)
    from_bytes = [t.timer(state.customer_id) for t in stored_state_timers(stored)]
    document: dict[str, Any] = orjson.loads(stored)
    from_document = [t.timer(state.customer_id) for t in document_timers(document)]
    assert sorted(from_bytes, key=lambda t: t.timer_id) == expected
    assert sorted(from_document, key=lambda t: t.timer_id) == expected
