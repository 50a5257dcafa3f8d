"""`Run.build`: models built without validation only when the run's time makes them valid."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from journeys import CustomerState, Engine, InstanceState, Transition, library_journeys
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


@pytest.mark.parametrize("now", [AT, NAIVE], ids=["aware", "naive"])
def test_a_run_trusts_its_values_only_at_an_aware_time(now: datetime) -> None:
    assert Run(CustomerState(customer_id="c1"), _cart(), now, "UTC").trusted is (now is AT)


def test_a_recorded_transition_is_the_validated_one() -> None:
    run = Run(CustomerState(customer_id="c1"), _cart(), AT, "UTC")
    run.record("step", INSTANCE, step_id="s")
    expected = Transition(
        kind="step", journey="j", version=1, instance_id="i", at=AT, holdout=False, step_id="s"
    )
    assert run.transitions == [expected]
    assert run.transitions[0].model_fields_set == expected.model_fields_set


def test_a_naive_time_still_fails_validation_where_it_did() -> None:
    run = Run(CustomerState(customer_id="c1"), _cart(), NAIVE, "UTC")
    with pytest.raises(ValidationError, match="timezone"):
        run.record("step", INSTANCE, step_id="s")
    engine = Engine(library_journeys())
    with pytest.raises(ValidationError, match="timezone"):
        engine.advance(CustomerState(customer_id="c1"), _cart(), NAIVE)
