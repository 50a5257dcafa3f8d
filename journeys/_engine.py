"""The journey engine: a pure function of (state, event, now).

`Engine.advance` never reads the clock and never does I/O: given the same state, event and time
it returns the same new state, actions and timers, which is what makes journeys replayable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from journeys._build import copied_with
from journeys._calendar import bucket
from journeys._errors import JourneyDefinitionError, JourneyRuntimeError
from journeys._loader import Journey
from journeys._policy import ContactPolicy, ContactState, PendingSend, decide, remember_send
from journeys._predicates import evaluate, resolve
from journeys._run import Run, seen_key
from journeys._state import (
    CustomerState,
    InstanceState,
    SentAction,
    Timer,
    Transition,
    deferral_timer,
    working_copy,
)
from schemas import (
    Action,
    ConsentChanged,
    Cooldown,
    CustomerErased,
    MessageReceipt,
    PerKey,
    Suppression,
    TimerFired,
    Touchpoint,
    WaitForStep,
    WaitStep,
    stable_id,
)


@dataclass(frozen=True)
class Outcome:
    """What one event did to one customer."""

    state: CustomerState
    actions: tuple[Action, ...] = ()
    timers: tuple[Timer, ...] = ()
    cancelled_timers: tuple[str, ...] = ()
    transitions: tuple[Transition, ...] = ()
    suppressed: tuple[Suppression, ...] = ()
    erased: bool = False


class Engine:
    """Runs a set of journeys. New entrants get the highest version of each journey; running
    instances stay on the version they entered with, unless a newer version migrates them."""

    def __init__(
        self,
        journeys: Iterable[Journey],
        default_timezone: str = "UTC",
        policy: ContactPolicy | None = None,
    ) -> None:
        self.default_timezone = default_timezone
        # without a policy nothing is held back: the journeys alone decide (tests, simulation)
        self.policy = policy or ContactPolicy.permissive()
        self._versions: dict[tuple[str, int], Journey] = {}
        self._latest: dict[str, Journey] = {}
        for journey in journeys:
            self._versions[(journey.name, journey.version)] = journey
            current = self._latest.get(journey.name)
            if current is None or journey.version > current.version:
                self._latest[journey.name] = journey
        self._migrations = self._index_migrations()
        # per event type, so that an event costs only the journeys it can concern
        self._triggered_by: dict[str, list[Journey]] = {}
        for journey in self._latest.values():
            self._triggered_by.setdefault(journey.definition.trigger.event, []).append(journey)
        self._reacts_to = {key: _reacts_to(journey) for key, journey in self._versions.items()}

    def _index_migrations(self) -> dict[tuple[str, int], Journey]:
        migrations = {}
        for journey in self._versions.values():
            migrate = journey.definition.migrate
            if migrate is None:
                continue
            old = self._versions.get((journey.name, migrate.from_version))
            if old is not None:
                _check_migration_covers(old, journey)
            migrations[(journey.name, migrate.from_version)] = journey
        return migrations

    @property
    def journeys(self) -> list[Journey]:
        """The newest version of every journey."""
        return list(self._latest.values())

    def runnable(self, journey: str, version: int) -> bool:
        """Can instances of this version go on (loaded, or migrated to a loaded version)?"""
        return (journey, version) in self._versions or (journey, version) in self._migrations

    def advance(
        self,
        state: CustomerState,
        event: Touchpoint,
        now: datetime,
        *,
        event_data: dict[str, Any] | None = None,
    ) -> Outcome:
        """Apply one event to one customer's state at time `now`.

        `event_data`: `schemas.touchpoint_data(event)`, when the caller has it already (the
        worker makes it for a whole batch in one pass); it is read and kept, never changed.
        """
        if state.erased:
            return Outcome(state=state)  # forgotten: nothing about them is kept or sent
        if isinstance(event, CustomerErased):
            return _erase(state)
        run = Run(working_copy(state), event, now, self.default_timezone, given_data=event_data)
        self._migrate(run)
        _update_consent(run.state.contact, event)
        if isinstance(event, TimerFired):
            self._on_timer(run, event)
        else:
            if self._concerns_instances(run):
                self._on_goals(run)
                self._on_exit_events(run)
                self._on_awaited_events(run)
            self._on_triggers(run)
        self._apply_policy(run)
        return Outcome(
            state=run.state,
            actions=tuple(run.actions),
            timers=tuple(run.timers),
            cancelled_timers=tuple(run.cancelled_timers),
            transitions=tuple(run.transitions),
            suppressed=tuple(run.suppressed),
        )

    def _apply_policy(self, run: Run) -> None:
        """Let the contact policy judge this event's sends, the most important first."""
        if not run.candidates:
            return  # most events send nothing
        placed: list[tuple[int, list[Transition]]] = []
        for position, pending in sorted(run.candidates, key=lambda c: -c[1].action.priority):
            before = len(run.transitions)
            self._judge(run, pending)
            placed.append((position, run.transitions[before:]))
            del run.transitions[before:]
        for position, verdicts in sorted(placed, key=lambda p: p[0], reverse=True):
            run.transitions[position:position] = verdicts

    def _judge(self, run: Run, pending: PendingSend) -> None:
        contact, action = run.state.contact, pending.action
        preferred = run.state.profile.get("preferred_channel")
        decision = decide(
            self.policy,
            contact,
            pending,
            preferred=str(preferred) if preferred else None,
            zone=run.zone(),
            now=run.now,
        )
        if decision.verdict == "send":
            assert decision.channel is not None
            _send(run, self.policy, copied_with(action, {"channel": decision.channel}))
        elif decision.verdict == "defer":
            assert decision.until is not None
            _defer(run, pending, decision.until, decision.reason or "")
        else:
            _suppress(run, action, decision.reason or "", pending.requested_channel)

    def migrate_state(self, state: CustomerState, now: datetime) -> Outcome:
        """What deploying the loaded versions does to a stored state (for previews)."""
        run = Run(working_copy(state), None, now, self.default_timezone)
        self._migrate(run)
        return Outcome(state=run.state, transitions=tuple(run.transitions))

    def _journey(self, instance: InstanceState) -> Journey:
        journey = self._versions.get((instance.journey, instance.version))
        if journey is None:
            raise _not_loaded(instance)
        return journey

    def _migrate(self, run: Run) -> None:
        for instance in list(run.state.instances.values()):
            key = (instance.journey, instance.version)
            # a newer version's `migrate` block moves its customers, loaded or not
            if key not in self._migrations:
                continue
            instance = run.own(instance)
            target = self._migrations[key]
            mapping = target.definition.migrate.steps if target.definition.migrate else {}
            if instance.step_id not in mapping:
                raise JourneyRuntimeError(
                    f"journey {instance.journey!r} v{target.version} migrates from "
                    f"v{instance.version} but does not map step {instance.step_id!r}"
                )
            old_step = instance.step_id
            instance.version = target.version
            instance.step_id = mapping[old_step]
            run.record("migrated", instance, step_id=instance.step_id, reason=f"from {old_step}")

    def _on_timer(self, run: Run, event: TimerFired) -> None:
        timer = event.payload
        deferred = run.state.contact.deferred.pop(timer.timer_id, None)
        if deferred is not None:
            # a deferred send is judged again now: consent may be gone, the cap still full
            run.candidates.append((len(run.transitions), deferred))
            return
        instance = run.instance_by_id(timer.instance_id)
        # a timer of an instance that has since ended or moved on is stale: at-least-once
        # firing makes this normal, so it is ignored rather than treated as an error
        if instance is None or instance.timer_id != timer.timer_id:
            return
        instance = run.own(instance)
        instance.timer_id = instance.wake_at = None
        step = self._journey(instance).steps[instance.step_id]
        if isinstance(step, WaitStep):
            run.execute(self._journey(instance), instance, step.next)
        elif isinstance(step, WaitForStep):
            run.record("step", instance, step_id=step.id, reason="timeout")
            run.execute(self._journey(instance), instance, step.on_timeout)
        else:
            raise JourneyRuntimeError(
                f"journey {instance.journey!r} v{instance.version}: instance "
                f"{instance.instance_id} waits at {step.id!r}, which is not a wait step"
            )

    def _concerns_instances(self, run: Run) -> bool:
        """Is this event a goal, an exit or an awaited event of any running instance's journey?"""
        concerned = False
        for instance in run.state.instances.values():
            reacts_to = self._reacts_to.get((instance.journey, instance.version))
            if reacts_to is None:
                raise _not_loaded(instance)
            concerned = concerned or run.event_type in reacts_to
        return concerned

    def _on_goals(self, run: Run) -> None:
        for instance in list(run.state.instances.values()):
            goal = self._journey(instance).definition.goal
            if goal is None or run.event_type != goal.event:
                continue
            if run.now - instance.entered_at > goal.within:
                continue
            if goal.where is None or evaluate(goal.where, run.context(instance)):
                instance = run.own(instance)
                instance.seen[seen_key(goal.event)] = run.event_data
                run.record(
                    "goal",
                    instance,
                    reason=goal.event,
                    attributed_to=instance.last_action,
                    variants=dict(instance.variants),
                )
                run.finish(instance)

    def _on_exit_events(self, run: Run) -> None:
        for instance in list(run.state.instances.values()):
            for exit_on in self._journey(instance).definition.exit_on:
                if run.event_type == exit_on.event and (
                    exit_on.where is None or evaluate(exit_on.where, run.context(instance))
                ):
                    run.record("exited", instance, reason=f"exit_on {exit_on.event}")
                    run.finish(instance)
                    break

    def _on_awaited_events(self, run: Run) -> None:
        for instance in list(run.state.instances.values()):
            journey = self._journey(instance)
            step = journey.steps[instance.step_id]
            if not isinstance(step, WaitForStep) or not _awaited(step, run, instance):
                continue
            instance = run.own(instance)
            if instance.timer_id:
                run.cancelled_timers.append(instance.timer_id)
                instance.timer_id = instance.wake_at = None
            instance.seen[seen_key(step.event)] = run.event_data
            run.record("step", instance, step_id=step.id, reason=f"got {step.event}")
            run.execute(journey, instance, step.on_event)

    def _on_triggers(self, run: Run) -> None:
        for journey in self._triggered_by.get(run.event_type, ()):
            name, trigger = journey.name, journey.definition.trigger
            event = run.event_data
            context = {
                "event": event,
                "trigger": event,
                "vars": {},
                "profile": run.state.profile,
                "seen": {},
            }
            if trigger.where is not None and not evaluate(trigger.where, context):
                continue
            slot = _slot(name, trigger.reentry, context)
            if slot is not None and self._may_enter(run, name, slot, trigger.reentry):
                self._enter(run, journey, slot)

    @staticmethod
    def _may_enter(run: Run, name: str, slot: str, reentry: Any) -> bool:
        state = run.state
        if slot in state.instances:
            return False
        if reentry == "once":
            return state.entries.get(name, 0) == 0
        if isinstance(reentry, Cooldown):
            last = state.last_entry_at.get(name)
            return last is None or run.now - last >= reentry.cooldown
        return True

    def _enter(self, run: Run, journey: Journey, slot: str) -> None:
        assert run.event is not None
        customer_id = run.state.customer_id
        holdout_percent = journey.definition.holdout_percent
        event_data = run.event_data
        instance = InstanceState(
            journey=journey.name,
            version=journey.version,
            instance_id=stable_id(
                journey.name, str(journey.version), customer_id, slot, run.event.event_id
            ),
            slot=slot,
            step_id=journey.start,
            entered_at=run.now,
            # a copy of the document's top level, which `seen` and the event may share
            trigger=dict(event_data),
            # `seen` of the trigger's type reads the trigger (`Run.context`): not kept twice
            # no journey holds out more than it asks for: 0 % needs no bucket
            holdout=bool(holdout_percent)
            and bucket(customer_id, journey.name, "holdout") < holdout_percent * 100,
        )
        state = run.state
        run.adopt(instance)
        state.instances[slot] = instance
        state.entries[journey.name] = state.entries.get(journey.name, 0) + 1
        state.last_entry_at[journey.name] = run.now
        run.record("entered", instance)
        run.execute(journey, instance, journey.start)


def _slot(name: str, reentry: Any, context: dict[str, Any]) -> str | None:
    """The instance slot an entry would take; None when a per-key journey has no key."""
    if not isinstance(reentry, PerKey):
        return name
    key = resolve(reentry.per_key, context)
    if key is None or key == "":
        return None
    return f"{name}#{key}"


def _awaited(step: WaitForStep, run: Run, instance: InstanceState) -> bool:
    if run.event_type != step.event:
        return False
    for path in step.correlate:
        mine = resolve(path, instance.trigger)
        if mine is None or resolve(path, run.event_data) != mine:
            return False
    return step.where is None or evaluate(step.where, run.context(instance))


def _not_loaded(instance: InstanceState) -> JourneyRuntimeError:
    return JourneyRuntimeError(
        f"journey {instance.journey!r} version {instance.version} is not loaded, but "
        f"instance {instance.instance_id} runs on it"
    )


def _reacts_to(journey: Journey) -> frozenset[str]:
    """The event types a running instance of `journey` may react to (timers aside)."""
    definition = journey.definition
    awaited = [step.event for step in journey.steps.values() if isinstance(step, WaitForStep)]
    goal = [definition.goal.event] if definition.goal else []
    return frozenset([*goal, *(exit_on.event for exit_on in definition.exit_on), *awaited])


def _check_migration_covers(old: Journey, new: Journey) -> None:
    """Every step an old instance can wait at needs a home in the new version."""
    assert new.definition.migrate is not None
    mapping = new.definition.migrate.steps
    for step in old.steps.values():
        if isinstance(step, WaitStep | WaitForStep) and step.id not in mapping:
            raise JourneyDefinitionError(
                new.source,
                f"migrate from v{old.version} does not map its wait step {step.id!r}",
            )


def _update_consent(contact: ContactState, event: Touchpoint) -> None:
    if isinstance(event, ConsentChanged):
        consent = event.payload
        contact.set_consent(consent.channel.value, consent.purpose, consent.granted)
    elif isinstance(event, MessageReceipt) and event.payload.status == "unsubscribed":
        contact.set_consent(event.payload.channel.value, "marketing", False)


def _erase(state: CustomerState) -> Outcome:
    """Forget everything but the fact of the erasure, and cancel every pending timer."""
    timers = [i.timer_id for i in state.instances.values() if i.timer_id]
    timers += list(state.contact.deferred)
    return Outcome(
        state=CustomerState(customer_id=state.customer_id, erased=True),
        cancelled_timers=tuple(timers),
        erased=True,
    )


def _send(run: Run, policy: ContactPolicy, action: Action) -> None:
    run.actions.append(action)
    if action.purpose == "marketing":
        remember_send(policy, run.state.contact, action.channel, run.now)
    sent = SentAction(
        action_id=action.action_id,
        step_id=action.step_id,
        channel=action.channel.value,
        template=action.template,
    )
    instance = run.instance_by_id(action.instance_id)
    if instance is not None:
        run.own(instance).last_action = sent
    run.record_for("sent", action, action=sent)


def _defer(run: Run, pending: PendingSend, until: datetime, reason: str) -> None:
    action = copied_with(pending.action, {"not_before": until})
    timer = deferral_timer(stable_id("deferred", action.action_id, until.isoformat()), action)
    run.state.contact.deferred[timer.timer_id] = copied_with(pending, {"action": action})
    run.timers.append(timer)
    run.record_for("deferred", action, reason=reason, due_at=until)


def _suppress(run: Run, action: Action, reason: str, channel: str) -> None:
    run.suppressed.append(
        Suppression.model_validate(
            {
                "action_id": action.action_id,
                "customer_id": action.customer_id,
                "journey": action.journey,
                "journey_version": action.journey_version,
                "step_id": action.step_id,
                "channel": channel,
                "reason": reason,
                "at": run.now,
            }
        )
    )
    run.record_for("suppressed", action, reason=reason)
