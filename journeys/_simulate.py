"""Replay recorded events through the real engine on a virtual clock.

Timers fire at their due time in event time, interleaved with the recorded events, so a month
of journeys replays in milliseconds. The output is deterministic: the same events and journeys
give byte-identical timelines and actions.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from journeys._engine import Engine, Outcome
from journeys._state import CustomerState, Timer, Transition, pending_timers
from schemas import Action, TimerFired, Touchpoint

_MAX_TIMER_FIRINGS = 1_000_000


@dataclass(frozen=True)
class TimelineEntry:
    customer: str
    transition: Transition

    def render(self) -> str:
        t = self.transition
        return (
            f"  {t.at.isoformat().replace('+00:00', 'Z')}  {t.journey} v{t.version}  {_describe(t)}"
        )


@dataclass
class SimulationResult:
    timeline: list[TimelineEntry] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    states: dict[str, CustomerState] = field(default_factory=dict)
    skipped_timer_events: int = 0

    def render_timeline(self) -> str:
        """One block per customer (sorted), entries in the order they happened."""
        by_customer: dict[str, list[str]] = {}
        for entry in self.timeline:
            by_customer.setdefault(entry.customer, []).append(entry.render())
        blocks = [f"== {c}\n" + "\n".join(by_customer[c]) for c in sorted(by_customer)]
        return "\n\n".join(blocks) + "\n"


def _describe(t: Transition) -> str:
    match t.kind:
        case "entered":
            return "entered" + (" (holdout: no sends)" if t.holdout else "")
        case "step":
            return f"-> {t.step_id}" + (f" ({t.reason})" if t.reason else "")
        case "sent":
            assert t.action is not None
            a = t.action
            return f"sent {a.channel} {a.template} [{a.action_id[:12]}]"
        case "waiting":
            assert t.due_at is not None
            return f"waits at {t.step_id} until {t.due_at.isoformat().replace('+00:00', 'Z')}"
        case "held_out":
            return f"held out: no {t.reason} at {t.step_id}"
        case "goal":
            source = f" after {t.attributed_to.template}" if t.attributed_to else ""
            variants = "".join(f" {k}={v}" for k, v in sorted(t.variants.items()))
            holdout = " (holdout)" if t.holdout else ""
            return f"GOAL {t.reason}{source}{variants}{holdout}"
        case "exited":
            return f"exited ({t.reason})"
        case "migrated":
            return f"migrated to {t.step_id} ({t.reason})"
        case _:
            return "completed"


class _Simulation:
    def __init__(self, engine: Engine, states: dict[str, CustomerState]) -> None:
        self.engine = engine
        self.result = SimulationResult(states=states)
        self._pending: list[tuple[datetime, int, Timer]] = []
        self._live: set[str] = set()
        self._sequence = 0

    def resume(self) -> None:
        """Re-arm the timers that recorded states are waiting on."""
        for _, state in sorted(self.result.states.items()):
            for timer in pending_timers(state):
                self._arm(timer)

    def _arm(self, timer: Timer) -> None:
        self._sequence += 1
        self._live.add(timer.timer_id)
        heapq.heappush(self._pending, (timer.due_at, self._sequence, timer))

    def feed(self, event: Touchpoint, now: datetime) -> None:
        customer = event.customer.key
        state = self.result.states.get(customer) or CustomerState(customer_id=customer)
        outcome = self.engine.advance(state, event, now)
        self._apply(customer, outcome)

    def _apply(self, customer: str, outcome: Outcome) -> None:
        self.result.states[customer] = outcome.state
        self.result.actions.extend(outcome.actions)
        self.result.timeline.extend(TimelineEntry(customer, t) for t in outcome.transitions)
        self._live.difference_update(outcome.cancelled_timers)
        for timer in outcome.timers:
            self._arm(timer)

    def fire_until(self, moment: datetime | None) -> None:
        """Fire every live timer due at or before `moment` (all of them when None)."""
        fired = 0
        while self._pending and (moment is None or self._pending[0][0] <= moment):
            due, _, timer = heapq.heappop(self._pending)
            if timer.timer_id not in self._live:
                continue
            self._live.discard(timer.timer_id)
            self.feed(timer.fired_event(due), due)
            fired += 1
            if fired > _MAX_TIMER_FIRINGS:
                raise RuntimeError("more than a million timer firings: a runaway journey?")


def simulate(
    engine: Engine,
    events: Iterable[Touchpoint],
    *,
    until: datetime | None = None,
    states: dict[str, CustomerState] | None = None,
) -> SimulationResult:
    """Run `events` (in `occurred_at` order, stable) and the timers they cause.

    Timers still pending after the last event fire too, up to `until` if given. Recorded
    `timer.fired` events are skipped: the simulation fires its own.
    """
    simulation = _Simulation(engine, dict(states or {}))
    simulation.resume()
    indexed = sorted(enumerate(events), key=lambda pair: (pair[1].occurred_at, pair[0]))
    for _, event in indexed:
        if isinstance(event, TimerFired):
            simulation.result.skipped_timer_events += 1
            continue
        simulation.fire_until(event.occurred_at)
        simulation.feed(event, event.occurred_at)
    simulation.fire_until(until)
    return simulation.result
