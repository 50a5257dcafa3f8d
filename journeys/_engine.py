"""The journey engine: a pure function of (state, event, now).

`Engine.advance` never reads the clock and never does I/O: given the same state, event and time
it returns the same new state, actions and timers, which is what makes journeys replayable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from journeys._errors import JourneyRuntimeError
from journeys._loader import Journey
from journeys._predicates import evaluate, render
from journeys._state import CustomerState, InstanceState, Timer, Transition
from schemas import (
    Action,
    BranchStep,
    ExitStep,
    SendStep,
    TimerFired,
    Touchpoint,
    WaitStep,
    action_id_for,
    stable_id,
)

# A journey graph without wait-free loops ends well within this; it guards against a bad state.
_MAX_STEPS_PER_EVENT = 1_000


@dataclass(frozen=True)
class Outcome:
    """What one event did to one customer."""

    state: CustomerState
    actions: tuple[Action, ...] = ()
    timers: tuple[Timer, ...] = ()
    cancelled_timers: tuple[str, ...] = ()
    transitions: tuple[Transition, ...] = ()


@dataclass
class _Changes:
    actions: list[Action] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    cancelled_timers: list[str] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)


class Engine:
    """Runs a set of journeys. New entrants get the highest version of each journey; running
    instances stay on the version they entered with."""

    def __init__(self, journeys: Iterable[Journey]) -> None:
        self._versions: dict[tuple[str, int], Journey] = {}
        self._latest: dict[str, Journey] = {}
        for journey in journeys:
            self._versions[(journey.name, journey.version)] = journey
            current = self._latest.get(journey.name)
            if current is None or journey.version > current.version:
                self._latest[journey.name] = journey

    @property
    def journeys(self) -> list[Journey]:
        return list(self._latest.values())

    def advance(self, state: CustomerState, event: Touchpoint, now: datetime) -> Outcome:
        """Apply one event to one customer's state at time `now`."""
        changes = _Changes()
        instances = dict(state.instances)
        finished = dict(state.finished)
        event_data = event.model_dump(mode="json", exclude_none=True)
        if isinstance(event, TimerFired):
            self._on_timer(state.customer_id, instances, finished, event, now, changes)
        else:
            self._on_exit_events(instances, finished, event_data, changes)
            self._on_triggers(
                state.customer_id, instances, finished, event, event_data, now, changes
            )
        new_state = state.model_copy(update={"instances": instances, "finished": finished})
        return Outcome(
            state=new_state,
            actions=tuple(changes.actions),
            timers=tuple(changes.timers),
            cancelled_timers=tuple(changes.cancelled_timers),
            transitions=tuple(changes.transitions),
        )

    def _on_timer(
        self,
        customer_id: str,
        instances: dict[str, InstanceState],
        finished: dict[str, int],
        event: TimerFired,
        now: datetime,
        changes: _Changes,
    ) -> None:
        timer = event.payload
        instance = instances.get(timer.journey)
        # a timer of an instance that has since exited or moved on is stale: at-least-once
        # delivery of timers makes this normal, so it is ignored rather than treated as an error
        if instance is None or instance.timer_id != timer.timer_id:
            return
        step = self._journey_of(instance).steps[instance.step_id]
        if not isinstance(step, WaitStep):
            raise JourneyRuntimeError(
                f"journey {instance.journey!r} v{instance.version}: instance "
                f"{instance.instance_id} waits at {step.id!r}, which is not a wait step"
            )
        event_data = event.model_dump(mode="json", exclude_none=True)
        parked = self._run(
            customer_id, instance, step.next, event.event_id, event_data, now, changes
        )
        self._store(instances, finished, instance, parked)

    def _on_exit_events(
        self,
        instances: dict[str, InstanceState],
        finished: dict[str, int],
        event_data: dict[str, Any],
        changes: _Changes,
    ) -> None:
        for name, instance in list(instances.items()):
            journey = self._journey_of(instance)
            context = _context(event_data, instance)
            for exit_on in journey.definition.exit_on:
                if event_data["type"] == exit_on.event and (
                    exit_on.where is None or evaluate(exit_on.where, context)
                ):
                    del instances[name]
                    finished[name] = finished.get(name, 0) + 1
                    if instance.timer_id:
                        changes.cancelled_timers.append(instance.timer_id)
                    changes.transitions.append(
                        _transition("exited", instance, reason=f"exit_on {exit_on.event}")
                    )
                    break

    def _on_triggers(
        self,
        customer_id: str,
        instances: dict[str, InstanceState],
        finished: dict[str, int],
        event: Touchpoint,
        event_data: dict[str, Any],
        now: datetime,
        changes: _Changes,
    ) -> None:
        for name, journey in self._latest.items():
            trigger = journey.definition.trigger
            if name in instances or event.type != trigger.event:
                continue
            context = {"event": event_data, "trigger": event_data, "vars": {}}
            if trigger.where is not None and not evaluate(trigger.where, context):
                continue
            instance = InstanceState(
                journey=name,
                version=journey.version,
                instance_id=stable_id(name, str(journey.version), customer_id, event.event_id),
                step_id=journey.start,
                entered_at=now,
                trigger=event_data,
            )
            changes.transitions.append(_transition("entered", instance))
            parked = self._run(
                customer_id, instance, journey.start, event.event_id, event_data, now, changes
            )
            self._store(instances, finished, instance, parked)

    @staticmethod
    def _store(
        instances: dict[str, InstanceState],
        finished: dict[str, int],
        instance: InstanceState,
        parked: Timer | None,
    ) -> None:
        """Keep the instance if its run parked it at a wait, else count it as finished."""
        if parked is not None:
            instances[instance.journey] = instance.model_copy(
                update={"step_id": parked.step_id, "timer_id": parked.timer_id}
            )
        else:
            instances.pop(instance.journey, None)
            finished[instance.journey] = finished.get(instance.journey, 0) + 1

    def _run(
        self,
        customer_id: str,
        instance: InstanceState,
        step_id: str,
        triggered_by: str,
        event_data: dict[str, Any],
        now: datetime,
        changes: _Changes,
    ) -> Timer | None:
        """Run steps from `step_id` until the instance waits (its timer is returned) or exits."""
        journey = self._journey_of(instance)
        context = _context(event_data, instance)
        for _ in range(_MAX_STEPS_PER_EVENT):
            step = journey.steps[step_id]
            changes.transitions.append(_transition("step", instance, step_id=step.id))
            if isinstance(step, SendStep):
                changes.actions.append(
                    _action(customer_id, instance, step, triggered_by, context, now)
                )
                step_id = step.next
            elif isinstance(step, BranchStep):
                step_id = _choose(step, context)
            elif isinstance(step, WaitStep):
                timer = _timer(customer_id, instance, step, triggered_by, now)
                changes.timers.append(timer)
                return timer
            else:
                assert isinstance(step, ExitStep)
                changes.transitions.append(_transition("completed", instance, step_id=step.id))
                return None
        raise JourneyRuntimeError(
            f"journey {journey.name!r}: more than {_MAX_STEPS_PER_EVENT} steps for one event"
        )

    def _journey_of(self, instance: InstanceState) -> Journey:
        journey = self._versions.get((instance.journey, instance.version))
        if journey is None:
            raise JourneyRuntimeError(
                f"journey {instance.journey!r} version {instance.version} is not loaded, but "
                f"instance {instance.instance_id} runs on it"
            )
        return journey


def _context(event_data: dict[str, Any], instance: InstanceState) -> dict[str, Any]:
    return {"event": event_data, "trigger": instance.trigger, "vars": instance.vars}


def _choose(step: BranchStep, context: dict[str, Any]) -> str:
    for branch in step.branches:
        if evaluate(branch.when, context):
            return branch.next
    return step.otherwise


def _action(
    customer_id: str,
    instance: InstanceState,
    step: SendStep,
    triggered_by: str,
    context: dict[str, Any],
    now: datetime,
) -> Action:
    return Action(
        action_id=action_id_for(
            journey=instance.journey,
            journey_version=instance.version,
            customer_id=customer_id,
            instance_id=instance.instance_id,
            step_id=step.id,
            triggered_by=triggered_by,
        ),
        customer_id=customer_id,
        journey=instance.journey,
        journey_version=instance.version,
        instance_id=instance.instance_id,
        step_id=step.id,
        channel=step.channel,
        template=step.template,
        params=render(step.params, context),
        priority=step.priority,
        triggered_by=triggered_by,
        created_at=now,
        not_before=now,
    )


def _timer(
    customer_id: str, instance: InstanceState, step: WaitStep, triggered_by: str, now: datetime
) -> Timer:
    return Timer(
        timer_id=stable_id(
            instance.journey,
            str(instance.version),
            customer_id,
            instance.instance_id,
            step.id,
            triggered_by,
        ),
        customer_id=customer_id,
        journey=instance.journey,
        journey_version=instance.version,
        instance_id=instance.instance_id,
        step_id=step.id,
        due_at=now + step.duration,
    )


def _transition(
    kind: str, instance: InstanceState, step_id: str | None = None, reason: str | None = None
) -> Transition:
    return Transition.model_validate(
        {
            "kind": kind,
            "journey": instance.journey,
            "version": instance.version,
            "instance_id": instance.instance_id,
            "step_id": step_id,
            "reason": reason,
        }
    )
