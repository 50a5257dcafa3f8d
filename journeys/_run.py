"""One `advance` call in progress: the working state and the step interpreter."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, JsonValue

from journeys._build import Builder, is_aware
from journeys._calendar import BUCKETS, bucket, next_time_of_day
from journeys._errors import JourneyRuntimeError
from journeys._loader import Journey
from journeys._policy import PendingSend
from journeys._predicates import evaluate, render, resolve
from journeys._state import (
    CustomerState,
    InstanceState,
    Timer,
    Transition,
    TransitionKind,
    copy_instance,
)
from schemas import (
    Action,
    BranchStep,
    ContactChannel,
    ExitStep,
    SendStep,
    SplitStep,
    Step,
    Suppression,
    Touchpoint,
    UpdateStep,
    WaitForStep,
    WaitStep,
    action_id_for,
    stable_id,
    touchpoint_data,
)

_Model = TypeVar("_Model", bound=BaseModel)

# A journey graph without wait-free loops ends well within this; it guards against a bad state.
_MAX_STEPS_PER_EVENT = 1_000


def seen_key(event_type: str) -> str:
    """`seen.cart_abandoned`: event types have dots, which paths use as separators."""
    return event_type.replace(".", "_")


def seen_events(instance: InstanceState) -> dict[str, Any]:
    """The last event of each type the instance saw, its trigger included.

    An instance keeps in `seen` only the events it saw after its trigger: the trigger, kept
    once already, is the event of its type until a later one of that type replaces it. (States
    stored before 2026-12-07 hold the trigger in `seen` too, which reads the same.)
    """
    trigger_type = instance.trigger.get("type")
    if not isinstance(trigger_type, str):
        return instance.seen
    key = seen_key(trigger_type)
    if key in instance.seen:
        return instance.seen
    return {key: instance.trigger, **instance.seen}


@dataclass
class Run:
    state: CustomerState
    event: Touchpoint | None
    now: datetime
    default_timezone: str
    actions: list[Action] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    cancelled_timers: list[str] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    # (where in `transitions` the send step ran, the send): the policy's verdicts are placed
    # there, so timelines read in step order although the policy judges all sends at the end
    candidates: list[tuple[int, PendingSend]] = field(default_factory=list)
    suppressed: list[Suppression] = field(default_factory=list)
    # the event's JSON data, when the caller has it already (`Engine.advance`)
    given_data: dict[str, Any] | None = None
    event_type: str = field(init=False)
    triggered_by: str = field(init=False)
    # the instances this run may change (`own`), by id; holding them keeps their ids unique
    _owned: dict[int, InstanceState] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        # every time a run stores derives from `now`: so the times it builds hold an offset
        if not is_aware(self.now):
            raise JourneyRuntimeError(f"the time to advance to has no time zone: {self.now}")
        event = self.event
        self.event_type = event.type if event else ""
        self.triggered_by = event.event_id if event else "migration"

    @cached_property
    def event_data(self) -> dict[str, Any]:
        """The event as JSON data, for paths and `seen`; dumped only when a journey needs it."""
        event = self.event
        if event is None:
            return {}
        if self.given_data is not None:
            return self.given_data
        return touchpoint_data(event)

    def context(self, instance: InstanceState) -> dict[str, Any]:
        return {
            "event": self.event_data,
            "trigger": instance.trigger,
            "vars": instance.vars,
            "profile": self.state.profile,
            "seen": seen_events(instance),
        }

    def instance_by_id(self, instance_id: str) -> InstanceState | None:
        for instance in self.state.instances.values():
            if instance.instance_id == instance_id:
                return instance
        return None

    def record(self, kind: TransitionKind, instance: InstanceState, **details: Any) -> None:
        self.transitions.append(
            Transition(
                kind=kind,
                journey=instance.journey,
                version=instance.version,
                instance_id=instance.instance_id,
                at=self.now,
                holdout=instance.holdout,
                **details,
            )
        )

    def record_for(self, kind: TransitionKind, about: Action, **details: Any) -> None:
        """A transition about an action, whether or not its instance still runs."""
        instance = self.instance_by_id(about.instance_id)
        values: dict[str, Any] = {
            "kind": kind,
            "journey": about.journey,
            "version": about.journey_version,
            "instance_id": about.instance_id,
            "at": self.now,
            "step_id": about.step_id,
            "holdout": bool(instance and instance.holdout),
        }
        values.update(details)
        self.transitions.append(Transition(**values))

    def zone(self) -> ZoneInfo:
        name = self.state.profile.get("timezone") or self.default_timezone
        try:
            return ZoneInfo(str(name))
        except (ZoneInfoNotFoundError, ValueError):
            return ZoneInfo(self.default_timezone)

    def own(self, instance: InstanceState) -> InstanceState:
        """`instance` as this run may change it: the first time, a copy put in its place.

        The state a run works on shares the instances of the state it was given
        (`working_copy`), which must not change: everything that changes an instance asks
        for it here first, and goes on with what it gets.
        """
        if id(instance) in self._owned:
            return instance
        assert self.state.instances.get(instance.slot) is instance, "not this run's instance"
        copied = copy_instance(instance)
        self.state.instances[instance.slot] = copied
        self._owned[id(copied)] = copied
        return copied

    def adopt(self, instance: InstanceState) -> None:
        """A new instance of this run's making: its own to change."""
        self._owned[id(instance)] = instance

    def finish(self, instance: InstanceState) -> None:
        """End an instance wherever it is: drop it, cancel its timer, count it."""
        instance = self.own(instance)
        self.state.instances.pop(instance.slot, None)
        if instance.timer_id:
            self.cancelled_timers.append(instance.timer_id)
            instance.timer_id = instance.wake_at = None
        finished = self.state.finished
        finished[instance.journey] = finished.get(instance.journey, 0) + 1

    def execute(self, journey: Journey, instance: InstanceState, step_id: str) -> None:
        """Run steps from `step_id` until the instance parks at a wait or exits."""
        instance = self.own(instance)
        for _ in range(_MAX_STEPS_PER_EVENT):
            step = journey.steps[step_id]
            self.record("step", instance, step_id=step.id)
            next_step = self._step(journey, instance, step)
            if next_step is None:
                return
            step_id = next_step
        raise JourneyRuntimeError(
            f"journey {journey.name!r}: more than {_MAX_STEPS_PER_EVENT} steps for one event"
        )

    def _step(self, journey: Journey, instance: InstanceState, step: Step) -> str | None:
        """Do one step; return the next step id, or None when the instance parked or ended."""
        if isinstance(step, SendStep):
            self._send(instance, step)
            return step.next
        if isinstance(step, BranchStep):
            return _choose(step, self.context(instance))
        if isinstance(step, SplitStep):
            return self._split(instance, step)
        if isinstance(step, UpdateStep):
            self._update(instance, step)
            return step.next
        if isinstance(step, WaitStep):
            return self._wait(instance, step)
        if isinstance(step, WaitForStep):
            self._park(instance, step.id, self.now + step.timeout)
            return None
        assert isinstance(step, ExitStep)
        self.record("completed", instance, step_id=step.id)
        self.finish(instance)
        return None

    def _send(self, instance: InstanceState, step: SendStep) -> None:
        if instance.holdout:
            self.record("held_out", instance, step_id=step.id, reason=str(step.channel))
            return
        customer_id = self.state.customer_id
        # validated: the customer id, a stored instance and the rendered params come from
        # outside the engine (`Action(...)` without its Python wrapper)
        action = _ACTION.validated(
            {
                "action_id": action_id_for(
                    journey=instance.journey,
                    journey_version=instance.version,
                    customer_id=customer_id,
                    instance_id=instance.instance_id,
                    step_id=step.id,
                    triggered_by=self.triggered_by,
                ),
                "customer_id": customer_id,
                "journey": instance.journey,
                "journey_version": instance.version,
                "instance_id": instance.instance_id,
                "step_id": step.id,
                # for `preferred` the contact policy picks the channel; e-mail holds the place
                "channel": ContactChannel.EMAIL if step.channel == "preferred" else step.channel,
                "template": step.template,
                "params": render(step.params, self.context(instance)),
                "priority": step.priority,
                "purpose": step.purpose,
                "triggered_by": self.triggered_by,
                "created_at": self.now,
                "not_before": self.now,
            }
        )
        pending = _PENDING.unchecked(
            {"action": action, "requested_channel": str(step.channel), "on_cap": step.on_cap}
        )
        self.candidates.append((len(self.transitions), pending))

    def _split(self, instance: InstanceState, step: SplitStep) -> str:
        position = bucket(self.state.customer_id, instance.journey, step.id)
        threshold = 0.0
        chosen = step.variants[-1]
        for variant in step.variants:
            threshold += variant.percent * BUCKETS / 100
            if position < threshold:
                chosen = variant
                break
        if step.experiment:
            instance.variants[step.experiment] = chosen.name
        self.record("step", instance, step_id=step.id, reason=f"variant {chosen.name}")
        return chosen.next

    def _update(self, instance: InstanceState, step: UpdateStep) -> None:
        context = self.context(instance)
        for target, value in step.set.items():
            scope, name = target.split(".", 1)
            rendered: JsonValue = render(value, context)
            (instance.vars if scope == "vars" else self.state.profile)[name] = rendered
        if step.add_tags or step.remove_tags:
            current = self.state.profile.get("tags")
            tags = [t for t in current if isinstance(t, str)] if isinstance(current, list) else []
            tags = [t for t in tags if t not in step.remove_tags]
            tags += [t for t in step.add_tags if t not in tags]
            self.state.profile["tags"] = list[JsonValue](sorted(tags))

    def _wait(self, instance: InstanceState, step: WaitStep) -> str | None:
        due = self._due_time(instance, step)
        if due <= self.now:
            # the moment has passed (e.g. "2 days before the event" for a late booking)
            return step.next
        self._park(instance, step.id, due)
        return None

    def _due_time(self, instance: InstanceState, step: WaitStep) -> datetime:
        if step.duration is not None:
            return self.now + step.duration
        if step.until_time is not None:
            return next_time_of_day(self.now, step.until_time, self.zone())
        assert step.until is not None
        moment = resolve(step.until.path, self.context(instance))
        try:
            base = datetime.fromisoformat(str(moment))
        except ValueError:
            base = None
        if base is None or base.tzinfo is None:
            raise JourneyRuntimeError(
                f"journey {instance.journey!r} step {step.id!r}: {step.until.path} is "
                f"{moment!r}, not a date-time with a time zone"
            )
        try:
            return base + step.until.offset
        except OverflowError:
            raise JourneyRuntimeError(
                f"journey {instance.journey!r} step {step.id!r}: {step.until.path} is "
                f"{moment!r}, too far from the calendar's range for {step.until.offset}"
            ) from None

    def _park(self, instance: InstanceState, step_id: str, due: datetime) -> None:
        timer = _TIMER.unchecked(
            {
                "timer_id": stable_id(
                    instance.journey,
                    str(instance.version),
                    self.state.customer_id,
                    instance.instance_id,
                    step_id,
                    self.triggered_by,
                ),
                "customer_id": self.state.customer_id,
                "journey": instance.journey,
                "journey_version": instance.version,
                "instance_id": instance.instance_id,
                "step_id": step_id,
                "due_at": due,
            },
        )
        self.timers.append(timer)
        instance.step_id = step_id
        instance.timer_id = timer.timer_id
        instance.wake_at = due
        self.record("waiting", instance, step_id=step_id, due_at=due)


_TIMER = Builder(Timer)
_ACTION = Builder(Action)
_PENDING = Builder(PendingSend)


def _choose(step: BranchStep, context: dict[str, Any]) -> str:
    for branch in step.branches:
        if evaluate(branch.when, context):
            return branch.next
    return step.otherwise
