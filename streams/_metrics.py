"""Prometheus metrics of a worker, and the code that keeps them.

Labels are bounded: journey, step, channel, event type, source channel, group (treated or
holdout), a fixed vocabulary of reasons, topic and partition. A customer identifier, address or
event id is never a label. Every metric is listed, with its labels, in the README's Operations
section; the dashboards in deploy/grafana/dashboards and the alerts in deploy/prometheus/rules
use these names.

Gauges describe this worker's share of the work: the partitions assigned to it. Sum them over
workers (`sum by (journey, step) (...)`) for the whole deployment. Counters start at zero when a
worker starts (`rate` and `increase` handle that); the instances gauge is rebuilt after every
recovery from the journey states, so a restart or rebalance does not reset it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from journeys import CustomerState, Journey, Outcome, Transition, is_wait
from schemas import Action, SendStep, Touchpoint

log = logging.getLogger("polku.metrics")

TREATED, HOLDOUT = "treated", "holdout"
EXIT_COMPLETED, EXIT_EVENT = "completed", "exit_event"
# the worker's dead-letter kinds, declared at zero so a dead-letter rate is 0 rather than absent
DEAD_LETTER_KINDS = ("invalid_event", "journey_error")
NOTHING_SENT = "none"  # step and channel of a goal reached before any action was sent
LAG_SAMPLE_SECONDS = 1.0
_POSITION_TIMEOUT_SECONDS = 1.0

# Where the journey agent's time goes, `polku_worker_agent_seconds_total` by phase: `agent` is
# all of it (its batches of records and the timers fired after them); the others are parts of
# that, and what they leave is the agent's other work (Faust's, the batching, the identity step).
AGENT_PHASES = (
    "agent",  # the whole: every batch, and the timers fired after it
    "decode",  # a touchpoint's bytes parsed and validated
    "load",  # the customer's state read (table, cache or decoded)
    "advance",  # the journey engine
    "save",  # the new state encoded and staged, its timers noted
    "emit",  # actions and suppressions encoded and handed to the producer
    "settle",  # waiting for the broker's acks of the batch's records
    "write",  # the batch's table writes (RocksDB and changelog)
    "count",  # the batch's metrics
)
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

StepKey = tuple[str, str]  # (journey, step)
Count = tuple[Any, int]  # a counter's or gauge's labelled child, and what to add to it


@dataclass(frozen=True)
class ProcessedEvent:
    """An event whose outcome is counted once its batch's records are acked."""

    event: Touchpoint
    record_timestamp: float | None  # its record's Kafka timestamp: event-to-action latency
    before: CustomerState
    outcome: Outcome
    started: float  # perf_counter when its processing began
    counts: Sequence[Count] | None = None  # its `event_counts`, if worked out ahead


class PhaseTimes:
    """Seconds per phase of the agent's work, added up in floats and counted once per batch.

    A counter's add takes a lock: at several phases per event, a count per event would cost
    more than some of the phases it measures.
    """

    def __init__(self, counter: Counter) -> None:
        self._series = {phase: counter.labels(phase) for phase in AGENT_PHASES}
        self._spent = dict.fromkeys(AGENT_PHASES, 0.0)

    def add(self, phase: str, seconds: float) -> None:
        self._spent[phase] += seconds

    def flush(self) -> None:
        """Count what was added since the last flush."""
        for phase, seconds in self._spent.items():
            if seconds:
                self._series[phase].inc(seconds)
                self._spent[phase] = 0.0


class WorkerMetrics:
    """The worker's metrics in one registry, which `polku worker` serves on /metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._define_event_metrics()
        self._define_journey_metrics()
        self._define_action_metrics()
        self._define_timer_and_consumer_metrics()
        # (journey, step) of every instances series, so a recovery can reset them all in place
        self._instance_series: set[StepKey] = set()
        self._send_steps: set[StepKey] = set()
        # (topic, partition) -> offset of the next record the journey agent will process
        self._next_offsets: dict[tuple[str, int], int] = {}
        self._lag_series: set[tuple[str, int]] = set()
        self._last_sample_error: str | None = None
        # labelled series by (metric, label values): `labels()` takes a lock and checks its
        # arguments, several times per event
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._transition_counts: dict[tuple[Any, ...], tuple[Count, ...]] = {}

    def _define_event_metrics(self) -> None:
        reg = self.registry
        self.events = Counter(
            "polku_events_total",
            "Touchpoint events processed by the journey engine, by type and source channel",
            ["type", "source_channel"],
            registry=reg,
        )
        self.dead_lettered = Counter(
            "polku_events_dead_lettered_total",
            "Events sent to the dead-letter topic, by kind of problem",
            ["reason"],
            registry=reg,
        )
        self.rekeyed = Counter(
            "polku_events_rekeyed_total",
            "Events that arrived under another key and were re-produced keyed by customer",
            registry=reg,
        )
        self.forwarded = Counter(
            "polku_events_forwarded_total",
            "Resolved touchpoints handed to the journey step, by path: direct (keyed by their "
            "customer, nothing pending on the partition) or topic (through the customer topic)",
            ["path"],
            registry=reg,
        )
        for path in ("direct", "topic"):
            self.forwarded.labels(path)
        self.processing = Histogram(
            "polku_event_processing_seconds",
            "Time to process one event, including waiting for its actions to be acked",
            registry=reg,
        )
        self.agent_seconds = Counter(
            "polku_worker_agent_seconds",
            "Seconds the journey agent spent, by phase: agent is all of it, the others are "
            "parts of that (decode, load, advance, save, emit, settle, write, count)",
            ["phase"],
            registry=reg,
        )
        self.phases = PhaseTimes(self.agent_seconds)

    def _define_journey_metrics(self) -> None:
        reg = self.registry
        self.transitions = Counter(
            "polku_journey_transitions_total",
            "Everything that happened to journey instances, by kind of transition",
            ["journey", "kind"],
            registry=reg,
        )
        self.entries = Counter(
            "polku_journey_entries_total",
            "Customers who entered a journey, by group (treated, or holdout: no sends)",
            ["journey", "group"],
            registry=reg,
        )
        self.steps = Counter(
            "polku_journey_steps_total",
            "Journey instances that reached a step (the funnel)",
            ["journey", "step"],
            registry=reg,
        )
        self.exits = Counter(
            "polku_journey_exits_total",
            "Journey instances that ended without a goal: at an exit step (completed) or on "
            "an exit_on event (exit_event)",
            ["journey", "reason"],
            registry=reg,
        )
        self.goals = Counter(
            "polku_journey_goals_total",
            "Goals reached (conversions), by group: treated vs holdout measures uplift",
            ["journey", "group"],
            registry=reg,
        )
        self.goals_attributed = Counter(
            "polku_journey_goals_attributed_total",
            "Goals reached, by the last action sent before them (step, channel; none if none)",
            ["journey", "step", "channel"],
            registry=reg,
        )
        self.instances = Gauge(
            "polku_journey_instances",
            "Journey instances in progress on this worker's partitions, by the step they wait at",
            ["journey", "step"],
            registry=reg,
        )

    def _define_action_metrics(self) -> None:
        reg = self.registry
        self.actions = Counter(
            "polku_actions_emitted_total",
            "Actions produced to a channel topic (acked by the broker)",
            ["journey", "step", "channel"],
            registry=reg,
        )
        self.held_out = Counter(
            "polku_actions_held_out_total",
            "Sends skipped because the customer is in the journey's holdout group",
            ["journey", "step", "channel"],
            registry=reg,
        )
        # the contact policy's verdicts (consent, quiet hours, frequency caps, global holdout)
        self.suppressed = Counter(
            "polku_actions_suppressed_total",
            "Sends the contact policy dropped, by reason",
            ["journey", "step", "channel", "reason"],
            registry=reg,
        )
        self.deferred = Counter(
            "polku_actions_deferred_total",
            "Sends the contact policy postponed (e.g. quiet hours), by reason",
            ["journey", "step", "channel", "reason"],
            registry=reg,
        )
        self.event_to_action = Histogram(
            "polku_event_to_action_seconds",
            "From the triggering record's Kafka timestamp to its action being acked, by channel",
            ["channel"],
            buckets=_SECONDS_BUCKETS,
            registry=reg,
        )

    def _define_timer_and_consumer_metrics(self) -> None:
        reg = self.registry
        self.timers_pending = Gauge(
            "polku_timers_pending", "Durable timers waiting in this worker", registry=reg
        )
        self.timers_fired = Counter(
            "polku_timers_fired_total", "Timers fired as timer.fired events", registry=reg
        )
        self.timers_fired_ahead = Counter(
            "polku_timers_fired_ahead_total",
            "Fired timers saved with the outcome an idle worker had worked out ahead "
            "(POLKU_TIMER_WARM_SECONDS), not computed as they fired",
            registry=reg,
        )
        self.timer_lag = Histogram(
            "polku_timer_firing_lag_seconds",
            "How late a timer fired relative to its due time",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=reg,
        )
        self.timers_overdue = Gauge(
            "polku_timers_overdue_seconds",
            "How long the earliest due timer has been waiting to fire (0 when none is due)",
            registry=reg,
        )
        self.consumer_lag = Gauge(
            "polku_consumer_lag",
            "Records in a touchpoints partition not yet processed: fetch highwater minus the "
            "offset of the next record to process",
            ["topic", "partition"],
            registry=reg,
        )
        self.consumer_highwater = Gauge(
            "polku_consumer_highwater",
            "Offset after the last record of a partition, from the broker's fetch responses",
            ["topic", "partition"],
            registry=reg,
        )

    # --- declared series --------------------------------------------------------------------

    def declare_journeys(self, journeys: Iterable[Journey]) -> None:
        """Create every loaded journey's series at zero.

        A series that does not exist yet makes `rate`, `increase`, the funnel panels and the
        "journey stopped sending" alert see nothing instead of 0.
        """
        for reason in DEAD_LETTER_KINDS:
            self.dead_lettered.labels(reason)
        for journey in journeys:
            self._declare_journey(journey)

    def _declare_journey(self, journey: Journey) -> None:
        name = journey.name
        for group in (TREATED, HOLDOUT):
            self.entries.labels(name, group)
            self.goals.labels(name, group)
        for reason in (EXIT_COMPLETED, EXIT_EVENT):
            self.exits.labels(name, reason)
        for step_id, step in journey.steps.items():
            self.steps.labels(name, step_id)
            if is_wait(step):
                self.instances.labels(name, step_id)
                self._instance_series.add((name, step_id))
            if isinstance(step, SendStep):
                self._send_steps.add((name, step_id))
                channel = str(step.channel)
                self.held_out.labels(name, step_id, channel)
                if step.channel != "preferred":  # else the contact policy picks it per send
                    self.actions.labels(name, step_id, channel)

    # --- per event --------------------------------------------------------------------------

    def _child(self, metric: Any, *values: str) -> Any:
        child = self._children.get((metric, values))
        if child is None:
            child = self._children[metric, values] = metric.labels(*values)
        return child

    def record_event(
        self,
        event: Touchpoint,
        record_timestamp: float | None,
        before: CustomerState,
        outcome: Outcome,
        seconds: float,
    ) -> None:
        """Count what one processed event did, in `seconds`; its actions have just been acked."""
        self.record_events([ProcessedEvent(event, record_timestamp, before, outcome, 0.0)], seconds)

    def record_events(self, processed: Iterable[ProcessedEvent], acked: float) -> None:
        """Count what a batch's events did; their actions were acked at `acked` (perf_counter)."""
        totals: dict[Any, int] = {}
        for item in processed:
            counts = item.counts
            if counts is None:
                counts = self.event_counts(item.event, item.before, item.outcome)
            for child, amount in counts:
                totals[child] = totals.get(child, 0) + amount
            self.processing.observe(acked - item.started)
            if item.record_timestamp:
                self._record_latency(item.outcome.actions, item.record_timestamp)
        # one add per series and batch, not per event: each add takes the series' lock
        for child, amount in totals.items():
            child.inc(amount)

    def event_counts(
        self, event: Touchpoint, before: CustomerState, outcome: Outcome
    ) -> list[Count]:
        """The counters and gauges one processed event moves, and by how much: a pure function
        of the event and its outcome, which a firing worked out ahead works out then too."""
        counts: list[Count] = [(self._child(self.events, event.type, event.channel.value), 1)]
        for action in outcome.actions:
            child = self._child(self.actions, action.journey, action.step_id, action.channel.value)
            counts.append((child, 1))
        for transition in outcome.transitions:
            self._count_transition(transition, counts)
        self._count_policy(outcome, counts)
        self._count_instance_moves(before, outcome.state, counts)
        return counts

    def _record_latency(self, actions: Iterable[Action], record_timestamp: float) -> None:
        acked_at = time.time()  # wall clock: Kafka timestamps are epoch seconds
        for action in actions:
            self._child(self.event_to_action, action.channel.value).observe(
                max(0.0, acked_at - record_timestamp)
            )

    def _count_transition(self, transition: Transition, counts: list[Count]) -> None:
        last = transition.attributed_to
        # what the counts depend on: a few distinct transitions per journey step, seen over and
        # over, so their counts are worked out once each (as bounded as the series: every part
        # comes from the journeys' definitions and the contact policy's verdicts)
        key = (
            transition.journey,
            transition.kind,
            transition.step_id,
            transition.reason,
            transition.holdout,
            (last.step_id, last.channel) if last else None,
        )
        known = self._transition_counts.get(key)
        if known is None:
            known = self._transition_counts[key] = self._counts_of(transition)
        counts.extend(known)

    def _counts_of(self, transition: Transition) -> tuple[Count, ...]:
        counts = [(self._child(self.transitions, transition.journey, transition.kind), 1)]
        count = _BY_KIND.get(transition.kind)
        if count is not None:
            counts.extend(count(self, transition))
        return tuple(counts)

    def _entered(self, transition: Transition) -> list[Count]:
        return [(self._child(self.entries, transition.journey, _group(transition)), 1)]

    def _stepped(self, transition: Transition) -> list[Count]:
        # a wait_for step's timeout or awaited event, and a split's variant, are recorded as a
        # second `step` with a reason: the funnel counts each step once per visit
        if transition.reason is None and transition.step_id is not None:
            return [(self._child(self.steps, transition.journey, transition.step_id), 1)]
        return []

    def _held_out(self, transition: Transition) -> list[Count]:
        step = transition.step_id or NOTHING_SENT
        reason = transition.reason or "unknown"
        return [(self._child(self.held_out, transition.journey, step, reason), 1)]

    def _goal(self, transition: Transition) -> list[Count]:
        last = transition.attributed_to
        step, channel = (last.step_id, last.channel) if last else (NOTHING_SENT, NOTHING_SENT)
        return [
            (self._child(self.goals, transition.journey, _group(transition)), 1),
            (self._child(self.goals_attributed, transition.journey, step, channel), 1),
        ]

    def _exited(self, transition: Transition) -> list[Count]:
        return [(self._child(self.exits, transition.journey, EXIT_EVENT), 1)]

    def _completed(self, transition: Transition) -> list[Count]:
        return [(self._child(self.exits, transition.journey, EXIT_COMPLETED), 1)]

    def _count_policy(self, outcome: Outcome, counts: list[Count]) -> None:
        for held in outcome.suppressed:
            channel = str(held.channel)
            child = self._child(self.suppressed, held.journey, held.step_id, channel, held.reason)
            counts.append((child, 1))
        deferrals = [t for t in outcome.transitions if t.kind == "deferred"]
        if not deferrals:
            return
        # a deferral's transition does not name the channel; its parked send does
        channels = {
            (pending.action.instance_id, pending.action.step_id): pending.requested_channel
            for pending in outcome.state.contact.deferred.values()
        }
        for deferral in deferrals:
            step = deferral.step_id or NOTHING_SENT
            channel = channels.get((deferral.instance_id, step), "unknown")
            reason = deferral.reason or "unknown"
            counts.append((self._child(self.deferred, deferral.journey, step, channel, reason), 1))

    def _count_instance_moves(
        self, before: CustomerState, after: CustomerState, counts: list[Count]
    ) -> None:
        """The change in where this customer's instances wait (entered, moved, ended)."""
        was, now = _parked(before), _parked(after)
        if was == now:
            return  # most events move no instance: no tally to build
        # a plain dict: `collections.Counter`'s construction and `subtract` were a third of
        # the metrics' time per event (B1's mix, an instance moves on most events)
        change: dict[StepKey, int] = {}
        for key in now:
            change[key] = change.get(key, 0) + 1
        for key in was:
            change[key] = change.get(key, 0) - 1
        for key, delta in change.items():
            if delta:
                counts.append((self._child(self.instances, *key), delta))
                self._instance_series.add(key)

    def reset_instances(self, waiting_timers: Mapping[StepKey, int]) -> None:
        """After a recovery: the instances are those of the partitions this worker now owns.

        Every running instance waits on exactly one timer, so the states' timers (which the
        worker reads at recovery anyway) count them; a deferred send's timer sits at a send step and
        is not an instance. Series are set in place, never cleared, so a scrape never sees a gap.
        """
        parked = {key: n for key, n in waiting_timers.items() if key not in self._send_steps}
        for key in self._instance_series | set(parked):
            self.instances.labels(*key).set(parked.get(key, 0))
            self._instance_series.add(key)

    # --- consumer lag and overdue timers ----------------------------------------------------

    def processed(self, topic: str, partition: int, offset: int) -> None:
        """The journey agent finished the record at `offset`."""
        self._next_offsets[(topic, partition)] = offset + 1

    async def sample_forever(
        self,
        consumer: Any,
        topics: Sequence[str],
        next_due: Callable[[], datetime | None],
        clock: Callable[[], datetime],
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        """Refresh consumer lag and timer overdue gauges; a failed sample is logged, not fatal.

        Ends once `stopping()`: the worker stops its consumer before this task, and a sample
        of a consumer being stopped fails ("Event loop is closed"), which is no fault to log.
        """
        while True:
            await asyncio.sleep(LAG_SAMPLE_SECONDS)
            if stopping():
                return
            self.sample_overdue(next_due(), clock())
            try:
                await self.sample_lag(consumer, topics)
            except Exception as exc:  # a metrics glitch must never stop the worker
                if stopping():
                    return
                self._sample_failed(repr(exc))
            else:
                self._last_sample_error = None

    def _sample_failed(self, error: str) -> None:
        # once per distinct error, not once a second while it lasts
        if error != self._last_sample_error:
            log.warning("consumer lag not sampled: %s", error)
        self._last_sample_error = error

    def sample_overdue(self, next_due: datetime | None, now: datetime) -> None:
        overdue = (now - next_due).total_seconds() if next_due is not None else 0.0
        self.timers_overdue.set(max(0.0, overdue))

    async def sample_lag(self, consumer: Any, topics: Sequence[str]) -> None:
        """Lag per assigned partition of `topics`, from the fetch highwater, never ListOffsets.

        ListOffsets "latest" is wrong on some brokers (Tansu, see DESIGN.md), the highwater
        that every fetch response carries is right. Before the agent has processed a record of
        a partition, the consumer's fetch position stands in for the next offset to process.
        """
        assigned = {
            (tp.topic, tp.partition): tp
            for topic in topics
            for tp in assigned_partitions(consumer, topic)
        }
        for key, tp in assigned.items():
            highwater = consumer_highwater(consumer, tp)
            if highwater is None:
                continue
            position = self._next_offsets.get(key)
            if position is None:
                position = await fetch_position(consumer, tp)
            if position is None:
                continue
            self.consumer_highwater.labels(*key).set(highwater)
            self.consumer_lag.labels(*key).set(max(0, highwater - position))
            self._lag_series.add(key)
        self._forget_revoked(set(assigned))

    def _forget_revoked(self, assigned: set[tuple[str, int]]) -> None:
        # another worker owns these now and reports them; a stale offset must not come back
        for key in list(self._next_offsets):
            if key not in assigned:
                del self._next_offsets[key]
        for key in self._lag_series - assigned:
            self.consumer_lag.remove(*key)
            self.consumer_highwater.remove(*key)
        self._lag_series &= assigned


_BY_KIND: dict[str, Callable[[WorkerMetrics, Transition], list[Count]]] = {
    "entered": WorkerMetrics._entered,
    "step": WorkerMetrics._stepped,
    "held_out": WorkerMetrics._held_out,
    "goal": WorkerMetrics._goal,
    "exited": WorkerMetrics._exited,
    "completed": WorkerMetrics._completed,
}


def _group(transition: Transition) -> str:
    return HOLDOUT if transition.holdout else TREATED


def _parked(state: CustomerState) -> list[StepKey]:
    return [(instance.journey, instance.step_id) for instance in state.instances.values()]


# The Kafka client imports are local: importing `streams` (the CLI, `polku stats`) must not
# pay for loading Faust and aiokafka.


def assigned_partitions(consumer: Any, topic: str) -> list[Any]:
    """The partitions of `topic` assigned to this worker now."""
    from faust.exceptions import ConsumerNotStarted

    try:
        assignment = consumer.assignment()
    except ConsumerNotStarted:  # until the consumer thread runs
        return []
    return [tp for tp in assignment if tp.topic == topic]


def consumer_highwater(consumer: Any, tp: Any) -> int | None:
    """None until the first fetch response for `tp`, or when a rebalance just took it away."""
    try:
        highwater = consumer.highwater(tp)
    except AssertionError:  # aiokafka asserts that the partition is still assigned
        return None
    return int(highwater) if highwater is not None else None


async def fetch_position(consumer: Any, tp: Any) -> int | None:
    """The consumer's position in `tp`: the next offset it hands on."""
    from aiokafka.errors import IllegalStateError

    try:
        position = await asyncio.wait_for(consumer.position(tp), _POSITION_TIMEOUT_SECONDS)
    except (TimeoutError, IllegalStateError):  # still resetting, or no longer assigned
        return None
    return int(position) if position is not None else None
