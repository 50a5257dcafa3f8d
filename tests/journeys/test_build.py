"""`Builder.unchecked` and `copied_with`: the engine's models without validation, exactly as
validation builds them (values, their order, defaults, the fields counted as set)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import pytest
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from journeys import Timer
from journeys._build import Builder, copied_with, is_aware, new_model
from journeys._policy import PendingSend
from schemas import Action, ContactChannel, CustomerRef, encode

AT = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
TIMER = Timer(
    timer_id="t",
    customer_id="c",
    journey="j",
    journey_version=1,
    instance_id="i",
    step_id="wait",
    due_at=AT,
)


def _action() -> Action:
    return Action(
        action_id="b" * 32,
        customer_id="c",
        journey="j",
        journey_version=1,
        instance_id="i",
        step_id="email",
        channel=ContactChannel.EMAIL,
        template="cart",
        params={"items": [{"sku": "A"}]},
        triggered_by="e-1",
        created_at=AT,
        not_before=AT,
    )


# (model, values a caller gives): the fewest the model takes, and every field
CASES: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (
        Timer,
        {
            "timer_id": "t",
            "customer_id": "c",
            "journey": "j",
            "journey_version": 1,
            "instance_id": "i",
            "step_id": "wait",
            "due_at": AT,
        },
    ),
    (PendingSend, {"action": _action(), "requested_channel": "preferred", "on_cap": "defer"}),
]


@pytest.mark.parametrize(("model", "values"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_unchecked_builds_what_validation_builds(
    model: type[BaseModel], values: dict[str, Any]
) -> None:
    builder = Builder(model)
    validated, unchecked = builder.validated(values), builder.unchecked(values)
    assert type(unchecked) is model
    assert unchecked == validated
    assert list(unchecked.__dict__) == list(validated.__dict__)
    assert unchecked.model_fields_set == validated.model_fields_set
    assert encode(unchecked) == encode(validated)
    assert repr(unchecked) == repr(validated)


def test_new_model_holds_the_given_fields_and_fields_set() -> None:
    expected = TIMER.model_copy()
    built = new_model(Timer, dict(TIMER.__dict__), {"timer_id"})
    assert built == expected
    assert built.model_fields_set == {"timer_id"}
    assert built.__pydantic_extra__ is None
    assert built.__pydantic_private__ is None
    assert encode(built) == encode(expected)


def test_validated_still_refuses_bad_values() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        Builder(Timer).validated(CASES[0][1] | {"due_at": datetime(2026, 3, 2)})


class _WithPrivate(BaseModel):
    _cache: int = PrivateAttr(default=0)
    value: int


class _WithValidator(BaseModel):
    value: int

    @field_validator("value")
    @classmethod
    def _positive(cls, value: int) -> int:
        return abs(value)


class _WithExtra(BaseModel):
    model_config = ConfigDict(extra="allow")
    value: int


class _WithMutableDefault(BaseModel):
    values: list[int] = []  # pydantic copies it for each model


class _WithValidatedDefault(BaseModel):
    value: int = Field(default=0, validate_default=True)


@pytest.mark.parametrize(
    "model",
    [
        _WithPrivate,
        _WithValidator,
        _WithExtra,
        _WithMutableDefault,
        _WithValidatedDefault,
        CustomerRef,
    ],
    ids=lambda m: m.__name__,
)
def test_models_that_validation_would_change_are_refused(model: type[BaseModel]) -> None:
    with pytest.raises(TypeError, match="build it with validation"):
        Builder(model)


@pytest.mark.parametrize(
    ("model", "update"),
    [
        (_action(), {"channel": ContactChannel.SMS}),
        (_action(), {"not_before": AT + timedelta(hours=8)}),
        (PendingSend(action=_action(), requested_channel="preferred"), {"action": _action()}),
    ],
)
def test_copied_with_is_model_copy(model: BaseModel, update: dict[str, Any]) -> None:
    before, fields_set = dict(model.__dict__), set(model.model_fields_set)
    expected, copied = model.model_copy(update=update), copied_with(model, update)
    assert copied == expected
    assert list(copied.__dict__) == list(expected.__dict__)
    assert copied.model_fields_set == expected.model_fields_set
    assert encode(copied) == encode(expected)
    assert model.__dict__ == before
    assert model.model_fields_set == fields_set


class _NoOffset(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


@pytest.mark.parametrize(
    ("moment", "aware"),
    [
        (AT, True),
        (AT.astimezone(), True),
        (datetime(2026, 3, 2), False),
        (datetime(2026, 3, 2, tzinfo=_NoOffset()), False),
        ("2026-03-02T10:00:00Z", False),  # pydantic parses text; the engine is given datetimes
    ],
)
def test_is_aware_agrees_with_pydantic_on_datetimes(moment: object, aware: bool) -> None:
    assert is_aware(moment) is aware
    if isinstance(moment, datetime):
        values = CASES[0][1] | {"due_at": moment}
        if aware:
            assert Builder(Timer).validated(values).due_at is moment
        else:
            with pytest.raises(ValidationError):
                Builder(Timer).validated(values)
