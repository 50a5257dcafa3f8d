"""The journey file format: a journey is data, validated here for shape.

Semantic checks that need the whole graph (dangling `next`, unreachable steps, loops without a
wait) live in `journeys`, which names the file and the step when one fails.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    Tag,
)

from schemas._touchpoints import EVENT_TYPES, ContactChannel

_STRICT = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

# P[nD][T[nH][nM][nS]]: the subset of ISO-8601 durations with a fixed length (no months, years).
_ISO_DURATION = re.compile(
    r"^P(?!$)(?:(?P<days>\d+)D)?(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def _parse_iso_duration(value: object) -> object:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError("a duration is an ISO-8601 string such as PT1H or P2DT12H")
    match = _ISO_DURATION.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not an ISO-8601 duration such as PT1H, PT30M or P2D")
    parts = {name: float(number) for name, number in match.groupdict().items() if number}
    try:
        return timedelta(**parts)
    except OverflowError:
        raise ValueError(f"{value!r} is too long a duration") from None


# long enough for any real journey, short enough that `now + duration` cannot overflow
MAX_DURATION = timedelta(days=3650)


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("a duration must be longer than zero")
    if value > MAX_DURATION:
        raise ValueError(f"a duration may be at most {MAX_DURATION.days} days")
    return value


IsoDuration = Annotated[
    timedelta,
    BeforeValidator(_parse_iso_duration),
    AfterValidator(_positive),
    Field(json_schema_extra={"type": "string", "format": "duration"}),
]

StepId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
JourneyName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]

# A dotted path into the evaluation context: `event` (the event being processed), `trigger`
# (the event that started this journey instance) or `vars` (journey variables).
ContextPath = Annotated[
    str,
    Field(pattern=r"^(event|trigger|vars)(\.[A-Za-z0-9_]+)*$", examples=["trigger.payload.total"]),
]


def _known_event_type(value: str) -> str:
    if value not in EVENT_TYPES:
        raise ValueError(f"unknown event type {value!r}; known: {', '.join(EVENT_TYPES)}")
    return value


EventType = Annotated[
    str, AfterValidator(_known_event_type), Field(json_schema_extra={"enum": list(EVENT_TYPES)})
]


class Comparison(BaseModel):
    """`path op value`, e.g. `{path: trigger.payload.total, op: gte, value: 100}`."""

    model_config = _STRICT

    path: ContextPath
    op: Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "contains", "exists"]
    value: JsonValue = None


class AllOf(BaseModel):
    model_config = _STRICT

    all: Annotated[list[Predicate], Field(min_length=1)]


class AnyOf(BaseModel):
    model_config = _STRICT

    any: Annotated[list[Predicate], Field(min_length=1)]


class NotOf(BaseModel):
    model_config = _STRICT

    not_: Predicate = Field(alias="not")


def _predicate_kind(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("all", "any", "not"):
            if key in value:
                return key
        return "compare"
    kinds: dict[type, str] = {AllOf: "all", AnyOf: "any", NotOf: "not"}
    return kinds.get(type(value), "compare")


Predicate = Annotated[
    Annotated[Comparison, Tag("compare")]
    | Annotated[AllOf, Tag("all")]
    | Annotated[AnyOf, Tag("any")]
    | Annotated[NotOf, Tag("not")],
    Discriminator(_predicate_kind),
]


class _Step(BaseModel):
    model_config = _STRICT

    id: StepId
    description: str | None = None


class WaitStep(_Step):
    """Pause the journey instance for a fixed time, durably."""

    type: Literal["wait"]
    duration: IsoDuration
    next: StepId


class SendStep(_Step):
    """Emit an action to a channel. String params may hold `{{ path }}` references."""

    type: Literal["send"]
    channel: ContactChannel
    template: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{0,127}$")]
    params: dict[str, JsonValue] = Field(default_factory=dict)
    priority: Annotated[int, Field(ge=0, le=100)] = 50
    next: StepId


class Branch(BaseModel):
    model_config = _STRICT

    when: Predicate
    next: StepId


class BranchStep(_Step):
    """Go to the first branch whose predicate holds, else to `otherwise`."""

    type: Literal["branch"]
    branches: Annotated[list[Branch], Field(min_length=1)]
    otherwise: StepId


class ExitStep(_Step):
    """End the journey instance."""

    type: Literal["exit"]


Step = Annotated[WaitStep | SendStep | BranchStep | ExitStep, Field(discriminator="type")]


class Trigger(BaseModel):
    model_config = _STRICT

    event: EventType
    where: Predicate | None = None


class ExitOn(BaseModel):
    """An event that ends a running instance at whatever step it is."""

    model_config = _STRICT

    event: EventType
    where: Predicate | None = None


class JourneyDefinition(BaseModel):
    """One version of one journey. The first step is where an entrant starts."""

    model_config = _STRICT

    schema_ref: str | None = Field(default=None, alias="$schema")
    name: JourneyName
    version: Annotated[int, Field(ge=1)]
    description: Annotated[str, Field(min_length=1)]
    owner: Annotated[str, Field(min_length=1)]
    trigger: Trigger
    exit_on: list[ExitOn] = Field(default_factory=list)
    steps: Annotated[list[Step], Field(min_length=1)]


for _model in (AllOf, AnyOf, NotOf, Branch, Trigger, ExitOn, BranchStep, JourneyDefinition):
    _model.model_rebuild()
