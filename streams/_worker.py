"""The Faust worker: touchpoints in, journey state in changelogged RocksDB tables, actions out.

Ordering per batch is what makes actions effectively-once with at-least-once processing:
decode and advance the engine for each event of a batch -> produce all their actions and wait
for the acks -> only then write the new state, which holds the customer's timers too. A crash
anywhere before the state write re-processes the batch from the old state and yields the same
`action_id`s, which senders dedupe. Batches (`_faust_batches.event_batches`: what is queued)
replace a broker round trip per event by one per batch.

One agent runs both steps, identity and journeys (`Pipeline`): a touchpoint already keyed by
its customer goes from the one to the other at once (`_shortcut`); any other takes the
customer topic, as the architecture draws it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import faust
from faust.types import TP, Message

from journeys import (
    CustomerState,
    Engine,
    JourneyRuntimeError,
    Outcome,
    Timer,
    decode_state,
    encode_state,
    merge_states,
    state_timer,
    stored_state_timers,
)
from schemas import InvalidEventError, TimerFired, Touchpoint, encode
from streams._client_producer import ClientProducer, ClientTopic, install_client_producer
from streams._decode_ahead import DecodedAhead
from streams._errors import ConfigError
from streams._faust_batches import event_batches
from streams._faust_drain import install_direct_delivery
from streams._faust_fixes import (
    committed_offset,
    install_fetch_highwaters,
    install_fetch_timing,
    read_offset,
    returned_offset,
)
from streams._faust_flush import install_complete_producer_flush
from streams._faust_gaps import install_gap_guard, repair_stuck_commits_forever
from streams._faust_resume import install_resume_after_clear
from streams._gc import collection_paused
from streams._identity import (
    ABSORB,
    MERGE_INTO,
    IdentityProcessor,
    control_headers,
    control_of,
)
from streams._input_horizon import InputProgress
from streams._kafka_security import faust_credentials
from streams._metrics import (
    Count,
    ProcessedEvent,
    WorkerMetrics,
    assigned_partitions,
    consumer_highwater,
    fetch_position,
)
from streams._settings import Settings
from streams._shortcut import Backlog, Shortcut, TrackedTopic, partition_for
from streams._staging import (
    Event,
    Outbox,
    SetEvent,
    StagedTable,
    process_batch,
    set_current_event,
    stored_items,
    table_writer,
)
from streams._state_cache import StateCache
from streams._timers import Due, DueTimeIndex

log = logging.getLogger("polku.worker")

Clock = Callable[[], datetime]
# a commit stuck behind never-acked offsets is read again after two such checks in a row
_STUCK_COMMIT_CHECK_SECONDS = 5.0
# timers an idle agent works out ahead per turn (~20 ms), between input batches
_WARM_STATES_PER_WAKE = 100
_NOT_LATE = timedelta(0)
# how often, per look-ahead window, an idle agent looks for timers to work out ahead
_LOOKS_PER_WINDOW = 5


def utc_now() -> datetime:
    return datetime.now(UTC)


class FiredTimerRecord:
    """A timer fired in the agent, as the batch stages see it: the record its `timer.fired`
    event would be on the customer topic, in the partition of its customer's state."""

    offset = -1  # never written to the topic
    headers: tuple[tuple[str, bytes], ...] = ()

    def __init__(self, topic: str, partition: int, key: bytes, event: TimerFired) -> None:
        self.topic = topic
        self.partition = partition
        self.key = key
        self.event = event
        # when it fired, where the record's Kafka timestamp would be (event-to-action latency)
        self.timestamp = event.occurred_at.timestamp()

    @functools.cached_property
    def value(self) -> bytes:
        # what a dead letter keeps; only then is it needed
        return encode(self.event)


@dataclass(eq=False)
class FiredTimerEvent:
    message: FiredTimerRecord


@dataclass(frozen=True)
class _Prepared:
    """A timer's firing worked out ahead of its due time, as of its due time (`warm_states`):
    its outcome, valid while its customer's state is still `stored`."""

    stored: bytes
    timer: Timer
    event: TimerFired
    before: CustomerState
    outcome: Outcome
    counts: list[Count]  # the metrics it moves
    records: list[tuple[Any, bytes, bytes]]  # its actions' and suppressions', encoded
    stored_after: bytes | None  # its state, encoded (None: blank)


def _stored_timers(
    items: Iterable[tuple[bytes, bytes]], by_step: Counter[tuple[str, int, str]]
) -> Iterator[tuple[str, float, str]]:
    """(timer id, due time, customer id) of each timer the stored states wait on, each counted
    into `by_step` under (journey, version, step).

    Not the state model: a recovery reads every state of the worker's partitions, a million on
    a large worker, and validating each would cost ten times as much (`stored_state_timers`).
    """
    due_time = datetime.fromisoformat
    for key, stored in items:
        timers = stored_state_timers(stored)
        if not timers:
            continue
        customer_id = key.decode()
        for timer in timers:
            by_step[timer.journey, timer.journey_version, timer.step_id] += 1
            yield timer.timer_id, due_time(timer.due_at).timestamp(), customer_id


class JourneyProcessor:
    """Everything the journey agent does, a batch of records at a time; owns the due-time index."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        metrics: WorkerMetrics,
        *,
        customer_topic: Any,
        dead_letter: Any,
        suppressed: Any,
        action_topics: dict[str, Any],
        states: Any,
        clock: Clock = utc_now,
        outbox: Outbox | None = None,
        producer: Callable[[], Any] | None = None,
        inputs: InputProgress | None = None,
        decoded: DecodedAhead | None = None,
    ) -> None:
        """`producer()`: the worker's producer, for table writes past Faust's table
        (`TableWriter`); `inputs`: how far the touchpoints are handled, which timers wait for
        (`_input_horizon`)."""
        self._settings = settings
        self._engine = engine
        self._metrics = metrics
        self._customer_topic = customer_topic
        self._dead_letter = dead_letter
        self._suppressed = suppressed
        self._action_topics = action_topics
        self._states = StagedTable(states, table_writer(states, producer))
        self.phases = metrics.phases
        self._decoded = StateCache(settings.state_cache_customers)
        self._clock = clock
        self._on_time = timedelta(seconds=settings.timer_on_time_seconds)
        # not `outbox or Outbox()`: an outbox with nothing pending is falsy (`__len__`), and the
        # steps must share the one they are given
        self.outbox = outbox if outbox is not None else Outbox()
        self.decoded = decoded if decoded is not None else DecodedAhead()
        self.index = DueTimeIndex()
        self._inputs = inputs
        self._index_changes: list[tuple[Due | None, str | None]] = []
        # timers taken ahead of their due time (`warm_states`), and the firings worked out
        self._warmed: set[str] = set()
        self._prepared: dict[str, _Prepared] = {}
        self._to_warm: deque[tuple[str, str]] = deque()
        self._looked_until = 0.0  # the end of the last look ahead (`_to_warm_now`)
        self._fired_ahead = 0  # in the batch of fired timers under way, as worked out ahead
        self._finished: list[ProcessedEvent] = []
        # a revoke counts up: a batch of fired timers begun before it is not saved
        self._epoch = 0
        self._firing_done = asyncio.Event()
        self._firing_done.set()
        metrics.declare_journeys(engine.journeys)

    async def handle_batch(self, events: Sequence[Event], set_event: SetEvent) -> None:
        """Advance every event, produce all their records, and once those are acked, save."""
        await process_batch(events, set_event, (self,), self.handle)
        self.record_processed(events)

    def begin(self, event: Event) -> None:
        self._states.event = event

    def discard(self) -> None:
        # the batch will be processed again from the unchanged state
        self._states.discard()
        self._index_changes.clear()
        self._finished.clear()

    async def save(self, set_event: SetEvent) -> None:
        phases, clock = self.phases, time.perf_counter
        started = clock()
        # one write per customer: the state holds its timers, so no second table (and no
        # second changelog a crash could leave behind the first) keeps them
        await self._states.apply(set_event)
        self._apply_index_changes()
        written = clock()
        self._record_finished()
        phases.add("write", written - started)
        phases.add("count", clock() - written)

    def _apply_index_changes(self) -> None:
        changes, self._index_changes = self._index_changes, []
        for timer, done in changes:
            if timer is not None:
                self.index.add(timer)
            if done is not None:
                self.index.discard(done)
                self._warmed.discard(done)
                self._prepared.pop(done, None)
        self._metrics.timers_pending.set(len(self.index))

    def _record_finished(self) -> None:
        finished, self._finished = self._finished, []
        self._metrics.record_events(finished, time.perf_counter())

    def record_processed(self, events: Sequence[Event]) -> None:
        if self._inputs is not None:
            self._inputs.processed(events)
        for event in events:
            message = event.message
            self._metrics.processed(message.topic, message.partition, message.offset)

    async def handle(self, message: Message) -> None:
        """One record of the customer topic: keyed by the canonical customer (identity agent)."""
        control = control_of(message)
        if control is not None:
            await self._on_control(control, message.key or b"", message.value or b"")
            return
        started = time.perf_counter()
        try:
            event = self.decoded.take(message)
        except InvalidEventError as exc:
            await self.send_to_dead_letter(message, "invalid_event", exc.reason, self.outbox)
            return
        self.phases.add("decode", time.perf_counter() - started)
        await self.handle_touchpoint(message, event)

    async def handle_touchpoint(
        self, message: Message, event: Touchpoint, now: datetime | None = None
    ) -> None:
        """One decoded touchpoint, keyed by its canonical customer, processed as of `now`
        (default: the clock's now)."""
        customer_key = message.key or event.customer.key.encode()
        clock = time.perf_counter
        started = clock()
        try:
            before = self._load_state(customer_key)
            loaded = clock()
            outcome = self._engine.advance(
                before, event, now or self._clock(), event_data=self.decoded.data_of(event)
            )
        except JourneyRuntimeError as exc:
            await self.send_to_dead_letter(message, "journey_error", str(exc), self.outbox)
            return
        except Exception as exc:
            # a bug met by one customer's data must not crash the agent, which would lose the
            # whole batch: the event is dead-lettered with the error, the others go on
            log.exception("journey engine failed on %s", event.event_id)
            await self.send_to_dead_letter(
                message, "journey_error", f"{type(exc).__name__}: {exc}", self.outbox
            )
            return
        self.phases.add("load", loaded - started)
        self.phases.add("advance", clock() - loaded)
        await self._apply(customer_key, message, event, before, outcome, started)

    async def _apply(
        self,
        customer_key: bytes,
        message: Message,
        event: Touchpoint,
        before: CustomerState,
        outcome: Outcome,
        started: float,
        prepared: _Prepared | None = None,
    ) -> None:
        """Send an event's records and stage its state (as worked out ahead, if `prepared`)."""
        clock = time.perf_counter
        began = clock()
        await self._emit(prepared.records if prepared else self._records(outcome))
        emitted = clock()
        fired = event.payload.timer_id if event.type == "timer.fired" else None
        stored_after = prepared.stored_after if prepared else None
        self._save(customer_key, outcome, fired, stored_after, before=before)
        self.phases.add("emit", emitted - began)
        self.phases.add("save", clock() - emitted)
        counts = prepared.counts if prepared else None
        finished = ProcessedEvent(event, message.timestamp, before, outcome, started, counts)
        self._finished.append(finished)

    async def _on_control(self, kind: str, key: bytes, value: bytes) -> None:
        if kind == MERGE_INTO:
            await self._hand_over(key, survivor=value)
        elif kind == ABSORB:
            absorbed = decode_state(value)
            self._save(key, merge_states(self._load_state(key), absorbed, self._clock()))
        else:
            log.warning("unknown control record %r on the customer topic ignored", kind)

    async def _hand_over(self, key: bytes, survivor: bytes) -> None:
        """Identity found that this profile is `survivor`: send it all there, keep nothing."""
        state = self._load_state(key)
        if state.is_blank():
            return
        timers = [i.timer_id for i in state.instances.values() if i.timer_id]
        # dropped here, re-armed under the survivor by merge_states
        self._save(
            key,
            Outcome(
                state=CustomerState(customer_id=state.customer_id),
                cancelled_timers=(*timers, *state.contact.deferred),
            ),
        )
        await self.outbox.send(
            self._customer_topic, survivor, encode_state(state), control_headers(ABSORB)
        )

    def _load_state(self, customer_key: bytes) -> CustomerState:
        stored = self._states.get(customer_key)
        if stored is None:
            return CustomerState(customer_id=customer_key.decode())
        return self._decoded.decoded(customer_key, stored)

    def _records(self, outcome: Outcome) -> list[tuple[Any, bytes, bytes]]:
        """(topic, key, value) of an outcome's actions and suppression records."""
        records = []
        for action in outcome.actions:
            topic = self._action_topics[action.channel.value]
            records.append((topic, action.customer_id.encode(), encode(action)))
        for held in outcome.suppressed:
            records.append((self._suppressed, held.customer_id.encode(), encode(held)))
        return records

    async def _emit(self, records: list[tuple[Any, bytes, bytes]]) -> None:
        """Queue an event's actions and suppression records; the batch waits for their acks."""
        for topic, key, value in records:
            await self.outbox.send(topic, key, value)

    def _save(
        self,
        customer_key: bytes,
        outcome: Outcome,
        fired: str | None = None,
        stored: bytes | None = None,
        *,
        before: CustomerState | None = None,
    ) -> None:
        """Stage the outcome's state (`stored`: its bytes, if encoded before) and its timers.

        A state equal to the one the event found (`before`, as the table holds it) is not
        written again: no encoding, no table write, no changelog record (a fifth of B1's events:
        a delivery update, a cart change no journey waits for).
        """
        if before is None or outcome.state != before:
            self._stage_state(customer_key, outcome.state, stored)
        changes = self._index_changes
        # indexed under the key its state is stored under, where firing will look for it
        customer_id = customer_key.decode()
        changes.extend((Due(t.timer_id, t.due_at, customer_id), None) for t in outcome.timers)
        changes.extend((None, timer_id) for timer_id in outcome.cancelled_timers)
        if fired:
            changes.append((None, fired))

    def _stage_state(self, customer_key: bytes, state: CustomerState, stored: bytes | None) -> None:
        if not state.is_blank():
            stored = stored or encode_state(state)
            self._states[customer_key] = stored
            # the next event of this customer finds it decoded (the engine never changes it)
            self._decoded.put(customer_key, stored, state)
        else:
            self._decoded.drop(customer_key)
            if customer_key in self._states:
                del self._states[customer_key]

    async def send_to_dead_letter(
        self, message: Message, kind: str, reason: str, outbox: Outbox
    ) -> None:
        log.warning(
            "dead-lettered %s[%s]@%s: %s", message.topic, message.partition, message.offset, reason
        )
        headers = [
            ("polku.error.kind", kind.encode()),
            ("polku.error.reason", reason.encode()),
            ("polku.error.topic", str(message.topic).encode()),
            ("polku.error.partition", str(message.partition).encode()),
            ("polku.error.offset", str(message.offset).encode()),
            ("polku.error.at", self._clock().isoformat().encode()),
        ]
        await outbox.send(self._dead_letter, message.key, message.value or b"", headers)
        self._metrics.dead_lettered.labels(kind).inc()

    async def rebuild_timer_index(self) -> None:
        """After (re)covery, the index is exactly the timers the states of this worker's
        partitions wait on."""
        self.index.clear()
        self._warmed.clear()
        self._prepared.clear()
        self._to_warm.clear()
        self._looked_until = 0.0
        by_step: Counter[tuple[str, int, str]] = Counter()
        self.index.add_many(_stored_timers(stored_items(self._states.table), by_step))
        stranded: set[tuple[str, int]] = set()
        waiting: Counter[tuple[str, str]] = Counter()
        for (journey, version, step_id), count in by_step.items():
            waiting[journey, step_id] += count
            if not self._engine.runnable(journey, version):
                stranded.add((journey, version))
        self._metrics.timers_pending.set(len(self.index))
        self._metrics.reset_instances(waiting)
        log.info("timer index rebuilt: %d pending timers", len(self.index))
        if stranded:
            # every running instance waits on a timer, so these versions still have customers
            versions = ", ".join(f"{name} v{version}" for name, version in sorted(stranded))
            raise ConfigError(
                f"refusing to run: customers are still in {versions}, which is no longer "
                "loaded; keep that version, or add a newer one with a `migrate` block"
            )

    def timers_due(self) -> bool:
        next_due = self.index.next_due()
        return next_due is not None and next_due <= self._clock()

    async def take_due_timers(self, limit: int) -> tuple[datetime, list[tuple[Due, Timer]]]:
        """Up to `limit` due timers, out of the index, each with the timer its state holds."""
        now = self._clock()
        if not self.timers_due():
            return now, []
        popped = self.index.pop_due(await self._handled_until(now), limit)
        self._warmed.difference_update(entry.timer_id for entry in popped)
        due = []
        for entry in popped:
            timer = self._stored_timer(entry)
            if timer is not None:
                due.append((entry, timer))
            else:
                self._prepared.pop(entry.timer_id, None)
        return now, due

    def states_to_warm(self) -> bool:
        """Whether a timer falls due within `timer_warm_seconds` not yet worked out ahead."""
        return bool(self._to_warm_now())

    def warm_states(self, limit: int) -> bool:
        """Work out ahead, as an idle worker can, the firing of up to `limit` timers falling
        due within `timer_warm_seconds`: their states decoded into the state cache, and the
        engine advanced as of their due time, so that a burst of them all due at once is only
        sent and saved then. Returns whether more are left to warm.

        A firing worked out ahead is used only if its timer fires on time (processed as of its
        due time, `timer_on_time_seconds`) from exactly the state it was worked out from: the
        engine is a pure function of (state, event, now), so it is then the outcome the firing
        would have computed. One whose state changed meanwhile is computed again.
        """
        to_warm = self._to_warm_now()
        taken = 0
        while to_warm and taken < limit:
            timer_id, customer_id = to_warm.popleft()
            if timer_id in self._warmed or timer_id not in self.index:
                continue  # taken meanwhile: fired, cancelled, or already worked out
            taken += 1
            self._warmed.add(timer_id)
            prepared = self._prepare(timer_id, customer_id)
            if prepared is not None:
                self._prepared[timer_id] = prepared
        return bool(to_warm)

    def _prepare(self, timer_id: str, customer_id: str) -> _Prepared | None:
        key = customer_id.encode()
        stored = self._states.stored(key, partition_for(key, self._settings.partitions))
        if stored is None:
            return None
        try:
            before = self._decoded.decoded(key, stored)
            timer = state_timer(before, timer_id, customer_id)
            if timer is None:
                return None
            event = timer.fired_event(timer.due_at)
            outcome = self._engine.advance(before, event, timer.due_at)
        except Exception:
            # whatever fails here fails again as the timer fires, which dead-letters its event
            return None
        counts = self._metrics.event_counts(event, before, outcome)
        records = self._records(outcome)
        stored_after = None if outcome.state.is_blank() else encode_state(outcome.state)
        return _Prepared(stored, timer, event, before, outcome, counts, records, stored_after)

    def _to_warm_now(self) -> deque[tuple[str, str]]:
        """The timers to work out ahead, from the last look ahead; a new look once the look
        ahead's end has moved on by a fifth of it and the last one's are done (each look visits
        every timer due before its end, those already worked out too)."""
        ahead = self._settings.timer_warm_seconds
        if ahead == 0 or self._settings.state_cache_customers == 0:
            self._to_warm.clear()
            return self._to_warm
        now = self._clock().timestamp()
        if not self._to_warm and now + ahead >= self._looked_until + ahead / _LOOKS_PER_WINDOW:
            self._look_ahead(now, now + ahead)
        return self._to_warm

    def _look_ahead(self, now: float, until: float) -> None:
        """Queue (timer id, customer) of the timers due after `now` up to `until` that are not
        worked out yet, as many as the state cache has room for beside those that are."""
        self._looked_until = until
        capacity = self._settings.state_cache_customers
        if len(self._warmed) >= capacity:
            # timers taken by the topic's records leave the index without firing here
            self._warmed = {timer_id for timer_id in self._warmed if timer_id in self.index}
            self._prepared = {
                timer_id: prepared
                for timer_id, prepared in self._prepared.items()
                if timer_id in self._warmed
            }
        room = capacity - len(self._warmed)
        for timer_id, due, customer_id in self.index.due_until(until):
            if len(self._to_warm) >= room:
                return  # more would push worked-out states out of the cache
            if due > now and timer_id not in self._warmed:
                self._to_warm.append((timer_id, customer_id))

    async def fire_here(
        self, due: Sequence[tuple[Due, Timer]], now: datetime, set_event: SetEvent
    ) -> int:
        """Process due timers in this agent, as a batch of their `timer.fired` events.

        Each is handled in the partition of its customer's state, as its record on the customer
        topic would be, and saved only after its actions are acked; a revoke meanwhile
        (`forget_partitions`) discards the batch, and the partitions' new owner fires the
        timers from the states it restores. On a failed send the timers go back into the index.
        """
        if not due:
            return 0
        epoch = self._epoch
        events = [self._fired_record(entry, timer, now) for entry, timer in due]
        self._fired_ahead = 0
        self._firing_done.clear()
        try:
            saved = await process_batch(
                events, set_event, (self,), self._handle_fired, keep=lambda: self._epoch == epoch
            )
        except BaseException as exc:
            if self._epoch == epoch:  # else the index is the new assignment's
                for entry, _ in due:
                    self.index.add(entry)
            if not isinstance(exc, Exception):
                raise  # cancelled: the worker stops, or Faust restarts the agent
            log.warning("%d due timers not fired, will retry: %s", len(due), exc)
            return 0
        finally:
            self._firing_done.set()
        if not saved:
            return 0
        for _, timer in due:
            self._count_fired(timer, now)
        self._metrics.timers_fired_ahead.inc(self._fired_ahead)
        return len(due)

    def _fired_record(self, entry: Due, timer: Timer, now: datetime) -> Event:
        key = entry.customer_id.encode()
        partition = partition_for(key, self._settings.partitions)
        fired_at = self.firing_time(timer, now)
        prepared = self._prepared.get(timer.timer_id)
        if prepared is not None and prepared.event.occurred_at == fired_at:
            event = prepared.event  # which tells `_handle_fired` its outcome is this firing's
        else:
            event = timer.fired_event(fired_at)
        message = FiredTimerRecord(self._settings.customer_topic, partition, key, event)
        # the parts of Faust's event and message that the batch stages read
        return cast(Event, FiredTimerEvent(message))

    def firing_time(self, timer: Timer, now: datetime) -> datetime:
        """When a timer firing `now` fires, as its event and the engine see it: its due time
        if it is on time (so its outcome does not depend on how busy the worker was), else
        `now` (a timer late by an outage must not send into quiet hours it was due before)."""
        late = now - timer.due_at
        return timer.due_at if _NOT_LATE <= late <= self._on_time else now

    async def _handle_fired(self, message: Message) -> None:
        record = cast(FiredTimerRecord, message)
        event = record.event
        prepared = self._prepared.pop(event.payload.timer_id, None)
        # its event is the one worked out only if the state was still the one it was worked out
        # from when the timer was taken (`_stored_timer`); since then only this batch can have
        # changed it (the table is written after the batch, and a revoke discards the batch)
        if (
            prepared is not None
            and prepared.event is event
            and not self._states.changed(record.key)
        ):
            started = time.perf_counter()
            self._fired_ahead += 1
            before, outcome = prepared.before, prepared.outcome
            await self._apply(record.key, message, event, before, outcome, started, prepared)
            return
        await self.handle_touchpoint(message, event, now=event.occurred_at)

    async def fire_via_topic(self, due: Sequence[tuple[Due, Timer]], now: datetime) -> int:
        """Produce `timer.fired` for due timers onto the customer topic, keyed by customer.

        Only a produce happens here: the timer leaves its customer's state when its event is
        processed from the topic, behind the customer's records already there.
        """
        pending = []
        for _, timer in due:
            # its event is processed behind other records, from another state: not as worked out
            self._prepared.pop(timer.timer_id, None)
            event = timer.fired_event(self.firing_time(timer, now))
            pending.append(
                await self._customer_topic.send(key=timer.customer_id.encode(), value=encode(event))
            )
        results = await asyncio.gather(*pending, return_exceptions=True)
        fired = 0
        for (entry, timer), result in zip(due, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("timer %s not fired, will retry: %s", timer.timer_id, result)
                self.index.add(entry)
                continue
            fired += 1
            self._count_fired(timer, now)
        return fired

    def _count_fired(self, timer: Timer, now: datetime) -> None:
        self._metrics.timers_fired.inc()
        self._metrics.timer_lag.observe(max(0.0, (now - timer.due_at).total_seconds()))

    async def _handled_until(self, now: datetime) -> datetime:
        """Now, or earlier while a touchpoints partition's unprocessed records are older."""
        if self._inputs is None:
            return now
        horizon = await self._inputs.horizon(now.timestamp())
        if horizon >= now.timestamp():
            return now
        return datetime.fromtimestamp(max(horizon, 0.0), UTC)

    def forget_partitions(self) -> None:
        """At a revoke: the timers of partitions another worker may own now must not fire here
        (the index comes back from the states of the new assignment, `rebuild_timer_index`)."""
        self._epoch += 1
        self.index.clear()
        self._warmed.clear()
        self._prepared.clear()
        self._to_warm.clear()
        self._looked_until = 0.0
        if self._inputs is not None:
            self._inputs.forget()

    async def timers_settled(self) -> None:
        """Wait until no batch of fired timers is in flight (after `forget_partitions`, one
        that was discards its writes), for at most a session timeout, as Faust's revoke does."""
        limit = self._settings.session_timeout_seconds
        try:
            await asyncio.wait_for(self._firing_done.wait(), limit)
        except TimeoutError:
            log.warning("a batch of fired timers was still waiting for acks after %.0f s", limit)

    def _stored_timer(self, due: Due) -> Timer | None:
        """The timer as its customer's state holds it (None once its event has removed it)."""
        key = due.customer_id.encode()
        stored = self._states.stored(key, partition_for(key, self._settings.partitions))
        if stored is None:
            return None
        prepared = self._prepared.get(due.timer_id)
        if prepared is not None:
            if prepared.stored == stored:
                return prepared.timer
            del self._prepared[due.timer_id]  # worked out from a state since replaced
        try:
            # decoded once: its event's processing finds it in the state cache
            state = self._decoded.decoded(key, stored)
        except ValueError:
            # the model refuses the state: its timer, read from the JSON, fires, and its event
            # is dead-lettered with the reason
            found = (t for t in stored_state_timers(stored) if t.timer_id == due.timer_id)
            timer = next(found, None)
            return timer.timer(due.customer_id) if timer is not None else None
        return state_timer(state, due.timer_id, due.customer_id)


class Pipeline:
    """The worker's one agent: the identity and the journey step, over the touchpoints, the
    identity links and the customer topic (co-partitioned), a batch at a time; and the timers
    of its partitions as they fall due.

    One agent, not one per step: the two steps share the journey tables once the identity
    step hands touchpoints over directly (`_shortcut`), and a batch of either saves together.
    A due timer is fired in the agent too, after a batch or when the agent is idle
    (`wake_for_timers_forever`), when nothing of its customer waits on the customer topic
    (as the shortcut decides for a touchpoint); otherwise its `timer.fired` event takes the
    topic, behind what waits there.
    """

    def __init__(
        self,
        settings: Settings,
        identity: IdentityProcessor,
        journeys: JourneyProcessor,
        backlog: Backlog,
        may_fire: Callable[[], bool] = lambda: True,
    ) -> None:
        """`may_fire()`: False while Faust's flow control is off (a rebalance under way)."""
        self._settings = settings
        self._identity = identity
        self._journeys = journeys
        self._backlog = backlog
        self._may_fire = may_fire
        self.timers_due = asyncio.Event()

    async def process(self, stream: Any) -> None:
        batches = event_batches(stream, self._settings.batch_max_events, self.timers_due)
        async for events in batches:
            await self.take_batch(events, set_current_event)

    async def take_batch(self, events: Sequence[Event], set_event: SetEvent) -> None:
        """A batch of records (empty: the agent was woken), then the timers due after it."""
        started = time.perf_counter()
        if events:
            # a collection in the middle of a batch would walk all that the batch holds; not
            # for the timers, where it did not help a burst (`streams._gc`)
            with collection_paused():
                await self.handle_batch(events, set_event)
        await self.after_batch(events, set_event)
        phases = self._journeys.phases
        phases.add("agent", time.perf_counter() - started)
        phases.flush()

    async def after_batch(self, events: Sequence[Event], set_event: SetEvent) -> None:
        """Fire the timers due now; an idle agent (woken, no records) also warms the states of
        the timers about to fall due."""
        # idle, a whole burst goes in one batch (all its actions are sent before any state is
        # saved); after records, no more than an input batch, so that input is not held up
        settings = self._settings
        limit = settings.batch_max_events if events else settings.timer_batch_max
        fired = await self.fire_due_timers(set_event, limit)
        idle = not events and not fired
        if idle and self._journeys.warm_states(_WARM_STATES_PER_WAKE):
            self.timers_due.set()  # more to warm, after any records that arrive

    async def handle_batch(self, events: Sequence[Event], set_event: SetEvent) -> None:
        decoded, started = self._identity.decoded, time.perf_counter()
        decoded.decode(event.message for event in events if control_of(event.message) is None)
        self._journeys.phases.add("decode", time.perf_counter() - started)
        # a full batch means a backlog: its records go out as the producer gathers them, and
        # the next batch follows at once; a batch that took all that was queued is sent at
        # once, since its actions are what the customers wait for
        at_once = len(events) < self._settings.batch_max_events
        stages = (self._identity, self._journeys)
        try:
            await process_batch(events, set_event, stages, self._route, at_once=at_once)
        finally:
            decoded.forget()
        self._journeys.record_processed(events)

    async def _route(self, message: Message) -> None:
        if message.topic == self._settings.customer_topic:
            self._backlog.read(message.partition, message.offset)
            await self._journeys.handle(message)
        else:
            await self._identity.handle(message)

    async def fire_due_timers(self, set_event: SetEvent, limit: int) -> int:
        """Fire up to `limit` of the timers due now; wake the agent again if more may be."""
        if not self._may_fire():
            return 0
        now, due = await self._journeys.take_due_timers(limit)
        here: list[tuple[Due, Timer]] = []
        there: list[tuple[Due, Timer]] = []
        for item in due:
            (here if self._fires_here(item[0]) else there).append(item)
        fired = await self._journeys.fire_here(here, now, set_event)
        fired += await self._journeys.fire_via_topic(there, now)
        if len(due) == limit:
            self.timers_due.set()  # after the input batch that may be waiting
        return fired

    def _fires_here(self, due: Due) -> bool:
        key = due.customer_id.encode()
        return self._backlog.is_clear(partition_for(key, self._settings.partitions), key)

    async def wake_for_timers_forever(self) -> None:
        """Wake an idle agent when timers are due (a busy one fires them after each batch)."""
        while True:
            await asyncio.sleep(self._settings.timer_poll_seconds)
            if self._journeys.timers_due() or self._journeys.states_to_warm():
                self.timers_due.set()


def build_app(
    settings: Settings, engine: Engine, metrics: WorkerMetrics, clock: Clock = utc_now
) -> tuple[faust.App, JourneyProcessor]:
    install_fetch_highwaters(settings)
    install_complete_producer_flush()
    install_fetch_timing(settings)
    install_gap_guard()
    install_direct_delivery()
    install_resume_after_clear()
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{host}" for host in settings.require_bootstrap().split(",")],
        broker_credentials=faust_credentials(settings),
        store="rocksdb://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        # no standby replicas: a worker that takes a partition over restores it from its
        # changelog; with standbys, a rebalance test lost a timer the changelog held
        table_standby_replicas=0,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=settings.heartbeat_interval_seconds,
        broker_commit_interval=settings.commit_interval_seconds,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=settings.producer_linger_seconds,
        broker_max_poll_records=settings.max_poll_records,
        web_enabled=False,
        web_bind="127.0.0.1",
        autodiscover=False,
    )
    # everything the worker writes goes through one producer of its own (`_client_producer`)
    client = ClientProducer(settings)
    install_client_producer(app, client)
    states = _bytes_table(app, "journey_state", settings)
    backlog = Backlog(
        highwater=lambda p: consumer_highwater(app.consumer, TP(settings.customer_topic, p)),
        start=lambda p: read_offset(app.consumer, TP(settings.customer_topic, p)),
    )
    tracked_customers = TrackedTopic(
        ClientTopic(client, settings.customer_topic), settings.partitions, backlog
    )
    # the touchpoints only: the identity and customer topics are the workers' own output
    inputs = InputProgress(
        held=lambda: assigned_partitions(app.consumer, settings.touchpoints_topic),
        highwater=lambda tp: consumer_highwater(app.consumer, tp),
        committed=lambda tp: committed_offset(app.consumer, tp),
        position=lambda tp: fetch_position(app.consumer, tp),
        handed=lambda tp: read_offset(app.consumer, tp),
        returned=lambda tp: returned_offset(app.consumer, tp),
    )
    # one outbox: the batch's records from both steps are acked together before it saves
    outbox = Outbox(
        waited=functools.partial(metrics.phases.add, "settle"), send_now=client.send_now
    )
    decoded = DecodedAhead()  # the batch's touchpoints, for both steps
    processor = JourneyProcessor(
        settings,
        engine,
        metrics,
        customer_topic=tracked_customers,
        dead_letter=ClientTopic(client, settings.dead_letter_topic),
        suppressed=ClientTopic(client, settings.suppressed_topic),
        action_topics={
            channel.value: ClientTopic(client, name)
            for channel, name in settings.action_topics.items()
        },
        states=states,
        clock=clock,
        outbox=outbox,
        producer=lambda: client,
        inputs=inputs,
        decoded=decoded,
    )
    shortcut = Shortcut(
        processor.handle_touchpoint,
        backlog,
        tracked_customers,
        settings.partitions,
        outbox,
        metrics,
    )
    identity = IdentityProcessor(
        raw_topic=ClientTopic(client, settings.touchpoints_topic),
        identity_topic=ClientTopic(client, settings.identity_topic),
        customer_topic=tracked_customers,
        aliases=_bytes_table(app, "aliases", settings),
        dead_letter=processor.send_to_dead_letter,
        metrics=metrics,
        deliver=shortcut.deliver,
        outbox=outbox,
        producer=lambda: client,
        decoded=decoded,
    )
    # concurrency 1: with more, Faust can commit past an in-flight message (faust#606)
    # channels' touchpoints, the identity links and the customer topic: one stream,
    # co-partitioned, so a partition's records of all three are processed in one place
    pipeline_input = app.topic(
        settings.touchpoints_topic,
        settings.identity_topic,
        settings.customer_topic,
        key_serializer="raw",
        value_serializer="raw",
    )
    pipeline = Pipeline(
        settings, identity, processor, backlog, may_fire=lambda: app.flow_control.is_active()
    )
    app.agent(pipeline_input, name="pipeline", concurrency=1)(pipeline.process)

    async def forget_partitions(*_: Any, **__: Any) -> None:
        backlog.forget()
        processor.forget_partitions()
        # a batch of fired timers has discarded its writes, or saved them before the revoke:
        # then they must be in the changelog before the partitions' new owner restores them
        await processor.timers_settled()
        await client.flush()

    async def hold_partitions(*args: Any, **__: Any) -> None:
        assigned: set[TP] = args[1]  # (sender, the whole new assignment)
        held = sorted(tp.partition for tp in assigned if tp.topic == settings.customer_topic)
        log.info("customer topic partitions held: %s", held)
        backlog.hold(held)

    app.on_partitions_revoked.connect(forget_partitions)
    app.on_partitions_assigned.connect(hold_partitions)

    async def after_recovery() -> None:
        try:
            await processor.rebuild_timer_index()
        except ConfigError as exc:
            log.critical("%s", exc)
            # a crashed app makes the Faust worker stop with a non-zero exit code
            await app.crash(exc)

    states.on_recover(after_recovery)
    app.task(pipeline.wake_for_timers_forever)

    async def sample_metrics() -> None:
        topics = [settings.touchpoints_topic, settings.identity_topic, settings.customer_topic]
        consumer = app.consumer
        await metrics.sample_forever(
            consumer,
            topics,
            processor.index.next_due,
            clock,
            stopping=lambda: app.should_stop or consumer.should_stop,
        )

    app.task(sample_metrics)

    async def repair_stuck_commits() -> None:
        await repair_stuck_commits_forever(app.consumer, _STUCK_COMMIT_CHECK_SECONDS)

    app.task(repair_stuck_commits)
    return app, processor


def _bytes_table(app: faust.App, name: str, settings: Settings) -> faust.types.TableT[bytes, bytes]:
    # bytes keys and values: the store keeps what `encode` wrote, no Faust codec in between
    return app.Table(
        name,
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
        options={
            # memory per table partition: write buffers until flushed, then the read cache
            "write_buffer_size": settings.table_write_buffer_bytes,
            "max_write_buffer_number": 2,
            "block_cache_size": settings.table_block_cache_bytes,
        },
    )
