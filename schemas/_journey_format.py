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
    model_validator,
)

from schemas._touchpoints import EVENT_TYPES, ContactChannel, Purpose

_STRICT = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

# [-]P[nD][T[nH][nM][nS]]: ISO-8601 durations of a fixed length (no months, years); the sign is
# only allowed where an offset may point backwards (e.g. 2 days *before* an event starts).
_ISO_DURATION = re.compile(
    r"^(?P<sign>-)?P(?!$)(?:(?P<days>\d+)D)?(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?"
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
    groups = match.groupdict()
    sign = -1 if groups.pop("sign") else 1
    parts = {name: sign * float(number) for name, number in groups.items() if number}
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


def _bounded(value: timedelta) -> timedelta:
    if abs(value) > MAX_DURATION:
        raise ValueError(f"an offset may be at most {MAX_DURATION.days} days either way")
    return value


SignedIsoDuration = Annotated[
    timedelta,
    BeforeValidator(_parse_iso_duration),
    AfterValidator(_bounded),
    Field(json_schema_extra={"type": "string", "pattern": r"^-?P"}),
]


def _time_of_day(value: str) -> str:
    hours, minutes = (int(part) for part in value.split(":"))
    if hours > 23 or minutes > 59:
        raise ValueError(f"{value!r} is not a time of day (00:00 to 23:59)")
    return value


TimeOfDay = Annotated[str, Field(pattern=r"^[0-9]{2}:[0-9]{2}$"), AfterValidator(_time_of_day)]
Percent = Annotated[float, Field(ge=0, le=100)]

StepId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
JourneyName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]

# A dotted path into the evaluation context: `event` (the event being processed), `trigger`
# (the event that started this journey instance), `vars` (journey variables), `profile` (the
# customer's attributes and tags) or `seen` (the last event of each type this instance saw).
CONTEXT_ROOTS = ("event", "trigger", "vars", "profile", "seen")
ContextPath = Annotated[
    str,
    Field(
        pattern=r"^(event|trigger|vars|profile|seen)(\.[A-Za-z0-9_]+)*$",
        examples=["trigger.payload.total"],
    ),
]
# Where an `update` step may write: a journey variable or a profile attribute.
UpdateTarget = Annotated[str, Field(pattern=r"^(vars|profile)\.[A-Za-z0-9_]+$")]


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


class WaitUntil(BaseModel):
    """A moment taken from the context, moved by an offset: `{path: trigger.payload.starts_at,
    offset: -P2D}` is two days before the event starts."""

    model_config = _STRICT

    path: ContextPath
    offset: SignedIsoDuration = timedelta(0)


class WaitStep(_Step):
    """Pause the instance durably: for a `duration`, until the next `until_time` of day in the
    customer's time zone, or `until` a moment from the context (no wait if it has passed)."""

    type: Literal["wait"]
    duration: IsoDuration | None = None
    until_time: TimeOfDay | None = None
    until: WaitUntil | None = None
    next: StepId

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> WaitStep:
        given = [self.duration, self.until_time, self.until]
        if sum(kind is not None for kind in given) != 1:
            raise ValueError("a wait needs exactly one of duration, until_time or until")
        return self


class WaitForStep(_Step):
    """Wait for an event (optionally the same cart / order as the trigger) or a timeout."""

    type: Literal["wait_for"]
    event: EventType
    where: Predicate | None = None
    correlate: list[Annotated[str, Field(pattern=r"^payload(\.[A-Za-z0-9_]+)+$")]] = Field(
        default_factory=list,
        description="payload paths that must be equal in the awaited event and the trigger",
    )
    timeout: IsoDuration
    on_event: StepId
    on_timeout: StepId


class SendStep(_Step):
    """Emit an action to a channel (`preferred`: the customer's preferred channel that has
    consent). String params may hold `{{ path }}` references. Marketing sends obey consent,
    quiet hours and frequency caps; transactional ones (order, delivery) their own consent only.
    When a cap is reached, `on_cap` says whether this send is suppressed or deferred."""

    type: Literal["send"]
    channel: ContactChannel | Literal["preferred"]
    template: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{0,127}$")]
    params: dict[str, JsonValue] = Field(default_factory=dict)
    priority: Annotated[int, Field(ge=0, le=100)] = 50
    purpose: Purpose = "marketing"
    on_cap: Literal["suppress", "defer"] = "suppress"
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


class Variant(BaseModel):
    model_config = _STRICT

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    percent: Percent
    next: StepId


class SplitStep(_Step):
    """A random split, deterministic per customer and journey. Naming an `experiment` records
    the variant on the instance, so goals are attributed to it."""

    type: Literal["split"]
    experiment: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")] | None = None
    variants: Annotated[list[Variant], Field(min_length=2)]

    @model_validator(mode="after")
    def _shares_add_up(self) -> SplitStep:
        total = sum(variant.percent for variant in self.variants)
        if abs(total - 100) > 1e-9:
            raise ValueError(f"variant percents add up to {total:g}, not 100")
        names = [variant.name for variant in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        return self


class UpdateStep(_Step):
    """Set journey variables or profile attributes, add or remove profile tags."""

    type: Literal["update"]
    set: dict[UpdateTarget, JsonValue] = Field(default_factory=dict)
    add_tags: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list)
    remove_tags: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list
    )
    next: StepId

    @model_validator(mode="after")
    def _changes_something(self) -> UpdateStep:
        if not (self.set or self.add_tags or self.remove_tags):
            raise ValueError("an update needs at least one of set, add_tags or remove_tags")
        return self


class ExitStep(_Step):
    """End the journey instance."""

    type: Literal["exit"]


Step = Annotated[
    WaitStep | WaitForStep | SendStep | BranchStep | SplitStep | UpdateStep | ExitStep,
    Field(discriminator="type"),
]


class Cooldown(BaseModel):
    model_config = _STRICT

    cooldown: IsoDuration


class PerKey(BaseModel):
    """One running instance per value of `per_key`, e.g. one per cart."""

    model_config = _STRICT

    per_key: ContextPath


Reentry = Literal["once", "always"] | Cooldown | PerKey


class Trigger(BaseModel):
    """What starts an instance. `reentry`: `always` (default: again once the last one ended),
    `once` (never again), `{cooldown: P7D}` (not within 7 days of the last entry) or
    `{per_key: trigger.payload.cart_id}` (one running instance per cart)."""

    model_config = _STRICT

    event: EventType
    where: Predicate | None = None
    reentry: Reentry = "always"


class Goal(BaseModel):
    """A conversion: this event within `within` of entry ends the journey and is recorded,
    attributed to the last action sent (holdout entrants' goals are recorded too)."""

    model_config = _STRICT

    event: EventType
    where: Predicate | None = None
    within: IsoDuration


class Migration(BaseModel):
    """Moves customers waiting in `from_version` to this version: old step id -> new step id.
    Every step an old instance can wait at must be mapped to a wait step of this version."""

    model_config = _STRICT

    from_version: Annotated[int, Field(ge=1)]
    steps: dict[StepId, StepId]


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
    goal: Goal | None = None
    holdout_percent: Percent = 0
    migrate: Migration | None = None
    steps: Annotated[list[Step], Field(min_length=1)]

    @model_validator(mode="after")
    def _migrates_from_an_older_version(self) -> JourneyDefinition:
        if self.migrate is not None and self.migrate.from_version >= self.version:
            raise ValueError("migrate.from_version must be older than version")
        return self


for _model in (
    AllOf,
    AnyOf,
    NotOf,
    Branch,
    Trigger,
    ExitOn,
    Goal,
    BranchStep,
    WaitForStep,
    JourneyDefinition,
):
    _model.model_rebuild()
