"""`Run`: the transitions it records, and the times it refuses."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from journeys import (
    CustomerState,
    Engine,
    InstanceState,
    JourneyRuntimeError,
    Transition,
    library_journeys,
)
from journeys._run import Run
from schemas import CartAbandoned, CartPayload, CustomerRef, LineItem, SourceChannel

AT = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
NAIVE = datetime(2026, 3, 2, 10, 0)
INSTANCE = InstanceState(
    journey="j", version=1, instance_id="i", slot="j", step_id="s", entered_at=AT, trigger={}
)


def _cart() -> CartAbandoned:
    return CartAbandoned(
        event_id="e-1",
        occurred_at=AT,
        channel=SourceChannel.WEB,
        customer=CustomerRef(customer_id="c1"),
        payload=CartPayload(cart_id="k", items=[LineItem(sku="A", name="Shoe")]),
    )


def test_a_recorded_transition_holds_the_instance_and_the_details() -> None:
    run = Run(CustomerState(customer_id="c1"), _cart(), AT, "UTC")
    run.record("step", INSTANCE, step_id="s")
    expected = Transition(
        kind="step", journey="j", version=1, instance_id="i", at=AT, holdout=False, step_id="s"
    )
    assert run.transitions == [expected]


def test_a_naive_time_is_refused_before_anything_is_built() -> None:
    # every time a run stores derives from `now`: one without an offset could not be stored
    with pytest.raises(JourneyRuntimeError, match="no time zone"):
        Run(CustomerState(customer_id="c1"), _cart(), NAIVE, "UTC")
    engine = Engine(library_journeys())
    with pytest.raises(JourneyRuntimeError, match="no time zone"):
        engine.advance(CustomerState(customer_id="c1"), _cart(), NAIVE)
    with pytest.raises(JourneyRuntimeError, match="no time zone"):
        engine.migrate_state(CustomerState(customer_id="c1"), NAIVE)
