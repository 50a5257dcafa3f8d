"""The per-customer journey state and the durable timers the engine asks for. Plain data."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal, NamedTuple

import msgspec
from msgspec.structs import replace
from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from journeys._build import AwareTime
from journeys._errors import JourneyRuntimeError
from journeys._policy import ContactState, PendingSend
from schemas import Action, CustomerRef, SourceChannel, TimerFired, TimerPayload

# JSON documents the engine stores: events as pydantic dumped them (mode="json") and values the
# journeys computed from them. Typed `Any` on purpose: pydantic's `JsonValue` checks every
# nested value on each load and dump, which was most of the engine's time per event.
Document = dict[str, Any]


class SentAction(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, gc=False):
    """The last action an instance sent: what a goal is attributed to."""

    action_id: str
    step_id: str
    channel: str
    template: str


class InstanceState(
    msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True, gc=False
):
    """One customer's run through one journey version, parked at a wait or wait_for step.

    `seen` holds the last event of each type this instance saw after its trigger (awaited
    events, goal), keyed by type with `_` for `.`; journeys read it with the trigger added
    (`Run.context`): `seen.product_viewed.payload.name`.
    """

    journey: str
    version: int
    instance_id: str
    slot: str
    step_id: str
    entered_at: AwareTime
    trigger: Document
    vars: Document = {}
    seen: Document = {}
    timer_id: str | None = None
    wake_at: AwareTime | None = None
    holdout: bool = False
    variants: dict[str, str] = {}
    last_action: SentAction | None = None


class CustomerState(
    msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True, gc=False
):
    """Everything the engine remembers of a customer.

    `instances` is keyed by slot: the journey name, or `name#key` for journeys that run one
    instance per correlation key. `profile` holds attributes and `tags` set by update steps.

    The state and its parts are msgspec structs, not pydantic models: the engine copies the
    state, changes it and encodes it on every event, and decodes it on every cache miss, at a
    fifth to a third of what the same models cost (B1's states, 2026-12-07). Stored as JSON
    (`encode_state`), without the fields that hold their defaults; `decode_state` reads that
    and the form the pydantic models wrote before (every field, `None`s left out).

    `gc=False` here and on the structs inside: the cyclic collector never tracks them. A worker
    keeps thousands of states (`streams._state_cache`), and in a stream of new customers all
    of them are young, so each collection of the youngest generation walked them all: in B2,
    10 tracked objects per kept state, 44-69 ms a collection. A state is JSON data (every
    state is encoded to be stored), so it can hold no reference cycle, which is what msgspec
    requires of `gc=False`.
    """

    customer_id: str
    instances: dict[str, InstanceState] = {}
    profile: Document = {}
    entries: dict[str, int] = {}
    last_entry_at: dict[str, AwareTime] = {}
    finished: dict[str, int] = {}
    contact: ContactState = msgspec.field(default_factory=ContactState)
    erased: bool = False

    def is_blank(self) -> bool:
        """Nothing is remembered of the customer but the id (the state need not be stored)."""
        return self == CustomerState(customer_id=self.customer_id)


def _encode_model(value: object) -> object:
    # the one pydantic model inside a state: a deferred send (`PendingSend`, its `Action`)
    if isinstance(value, BaseModel):
        return value.__pydantic_serializer__.to_python(value, mode="json", exclude_none=True)
    raise NotImplementedError(f"cannot encode {type(value).__name__} in a customer state")


def _decode_model(kind: type, value: object) -> object:
    if kind is PendingSend:
        return PendingSend.model_validate(value)
    raise NotImplementedError(f"cannot decode {kind.__name__} in a customer state")


_state_encoder = msgspec.json.Encoder(enc_hook=_encode_model)
_state_decoder = msgspec.json.Decoder(CustomerState, dec_hook=_decode_model)


def encode_state(state: CustomerState) -> bytes:
    """A customer state as the compact JSON it is stored and sent as."""
    return _state_encoder.encode(state)


def decode_state(stored: bytes) -> CustomerState:
    """The state `encode_state` wrote (or the pydantic models before it), checked field by field.

    Raises `JourneyRuntimeError` naming what is wrong when the bytes are not such a state.
    """
    try:
        return _state_decoder.decode(stored)
    except (msgspec.DecodeError, ValidationError) as exc:
        raise JourneyRuntimeError(f"not a stored customer state: {exc}") from None


def copy_state(state: CustomerState) -> CustomerState:
    """A copy the engine may change freely.

    Every struct and container the engine changes in place is new: the state, its instances
    and their `vars`, `seen` and `variants`, the profile, the counters, the contact state. The
    JSON documents held in them (a trigger, a seen event, a profile value) are shared: nothing
    changes one in place, a step only puts a new value under a key.
    """
    copied = working_copy(state)
    copied.instances = {slot: copy_instance(i) for slot, i in state.instances.items()}
    return copied


def working_copy(state: CustomerState) -> CustomerState:
    """`copy_state` but for the instances: the new `instances` dict holds the given ones.

    For `Engine.advance`, which copies an instance only before it changes it (`Run.own`):
    most events change one instance of a state or none, and copying them all was a tenth of
    the engine's time on B1's mix (py-spy, 2026-12-07).
    """
    contact = state.contact
    return replace(
        state,
        instances=dict(state.instances),
        profile=dict(state.profile),
        entries=dict(state.entries),
        last_entry_at=dict(state.last_entry_at),
        finished=dict(state.finished),
        contact=replace(
            contact,
            consent={channel: dict(p) for channel, p in contact.consent.items()},
            recent=list(contact.recent),
            deferred=dict(contact.deferred),
        ),
    )


def copy_instance(instance: InstanceState) -> InstanceState:
    """A copy of an instance that may be changed freely (its documents shared)."""
    return replace(
        instance,
        vars=dict(instance.vars),
        seen=dict(instance.seen),
        variants=dict(instance.variants),
    )


class Timer(BaseModel):
    """A request to be woken at `due_at`; the shell stores it durably and fires it as an event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timer_id: str
    customer_id: str
    journey: str
    journey_version: int
    instance_id: str
    step_id: str
    due_at: AwareDatetime

    def fired_event(self, now: datetime) -> TimerFired:
        """The `timer.fired` touchpoint; its id is derived from the timer, so re-firing dedupes."""
        return TimerFired(
            event_id=f"timer-{self.timer_id}",
            occurred_at=now,
            channel=SourceChannel.SYSTEM,
            customer=CustomerRef(customer_id=self.customer_id),
            payload=TimerPayload(
                timer_id=self.timer_id,
                journey=self.journey,
                journey_version=self.journey_version,
                instance_id=self.instance_id,
                step_id=self.step_id,
                due_at=self.due_at,
            ),
        )


TransitionKind = Literal[
    "entered",
    "step",
    "sent",
    "suppressed",
    "deferred",
    "waiting",
    "held_out",
    "migrated",
    "goal",
    "exited",
    "completed",
]


class Transition(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Something that happened to a journey instance, for metrics, timelines and audit."""

    kind: TransitionKind
    journey: str
    version: int
    instance_id: str
    at: AwareTime
    step_id: str | None = None
    reason: str | None = None
    holdout: bool = False
    attributed_to: SentAction | None = None
    variants: dict[str, str] = {}
    action: SentAction | None = None
    due_at: AwareTime | None = None


def parked_timer(customer_id: str, instance: InstanceState) -> Timer | None:
    """The timer an instance waits on, rebuilt from its state (None if it waits on none)."""
    if instance.timer_id is None or instance.wake_at is None:
        return None
    return Timer(
        timer_id=instance.timer_id,
        customer_id=customer_id,
        journey=instance.journey,
        journey_version=instance.version,
        instance_id=instance.instance_id,
        step_id=instance.step_id,
        due_at=instance.wake_at,
    )


def pending_timers(state: CustomerState) -> list[Timer]:
    """Every timer the state waits on: one per instance parked on a timer, one per deferred send.

    The state is the timers' only durable record: the engine arms a timer in the same outcome
    that parks an instance on it or defers a send under its id, and drops it with them.
    """
    parked = (parked_timer(state.customer_id, i) for i in state.instances.values())
    deferred = (deferral_timer(t, p.action) for t, p in state.contact.deferred.items())
    return [timer for timer in (*parked, *deferred) if timer is not None]


def state_timer(state: CustomerState, timer_id: str, customer_id: str) -> Timer | None:
    """The pending timer `timer_id` of a state (one of `pending_timers`), for the customer whose
    key the state is stored under; None once the state no longer waits on it."""
    for instance in state.instances.values():
        if instance.timer_id == timer_id:
            return parked_timer(customer_id, instance)
    pending = state.contact.deferred.get(timer_id)
    if pending is None:
        return None
    timer = deferral_timer(timer_id, pending.action)
    if timer.customer_id == customer_id:
        return timer
    return timer.model_copy(update={"customer_id": customer_id})


class StoredTimer(NamedTuple):
    """A pending timer as a stored state's JSON document holds it (`document_timers`)."""

    timer_id: str
    due_at: str  # ISO-8601, as stored
    journey: str
    journey_version: int
    instance_id: str
    step_id: str

    def timer(self, customer_id: str) -> Timer:
        due_at = datetime.fromisoformat(self.due_at)
        return Timer(customer_id=customer_id, **(self._asdict() | {"due_at": due_at}))


class _StoredInstance(msgspec.Struct):
    journey: str
    version: int
    instance_id: str
    step_id: str
    timer_id: str | None = None
    wake_at: str | None = None


class _StoredAction(msgspec.Struct):
    journey: str
    journey_version: int
    instance_id: str
    step_id: str
    not_before: str


class _StoredDeferral(msgspec.Struct):
    action: _StoredAction


class _StoredContact(msgspec.Struct):
    deferred: dict[str, _StoredDeferral] = {}


class _StoredTimerFields(msgspec.Struct):
    """What `document_timers` reads of a stored state; the decoder skips everything else."""

    instances: dict[str, _StoredInstance] = {}
    contact: _StoredContact = msgspec.field(default_factory=_StoredContact)


_decode_timer_fields = msgspec.json.Decoder(_StoredTimerFields).decode


def document_timers(document: Document) -> Iterator[StoredTimer]:
    """`pending_timers` of a stored state, read from its JSON document without the model.

    A recovery reads every customer's state to rebuild the due-time index (a million of them
    on a large worker), where validating each into a `CustomerState` would cost ten times as
    much. Fields left out of the document hold their defaults (`encode_state`).
    """
    return _timers_of(msgspec.convert(document, _StoredTimerFields))


def stored_state_timers(stored: bytes) -> list[StoredTimer]:
    """`document_timers` of a state as stored (its JSON bytes), parsed only if it can hold one.

    Most customers wait on no timer, and a recovery reads every state. A waiting instance has
    a `"timer_id":` key and a deferred send an action with a `"not_before":` key, so bytes
    holding neither have no timer; text that only looks like one costs a parse, nothing more.
    The parse decodes only the fields a timer needs and skips the rest (the events an instance
    keeps are most of a state's bytes): 2.3 µs a state of ~1.1 KB, against 5.3 µs for
    `orjson.loads` of all of it (B4's states, 2026-12-06).
    """
    if b'"timer_id":' not in stored and b'"not_before":' not in stored:
        return []
    return list(_timers_of(_decode_timer_fields(stored)))


def _timers_of(fields: _StoredTimerFields) -> Iterator[StoredTimer]:
    for instance in fields.instances.values():
        if instance.timer_id is not None and instance.wake_at is not None:
            yield StoredTimer(
                instance.timer_id,
                instance.wake_at,
                instance.journey,
                instance.version,
                instance.instance_id,
                instance.step_id,
            )
    for timer_id, pending in fields.contact.deferred.items():
        action = pending.action
        yield StoredTimer(
            timer_id,
            action.not_before,
            action.journey,
            action.journey_version,
            action.instance_id,
            action.step_id,
        )


def deferral_timer(timer_id: str, action: Action) -> Timer:
    """The timer a deferred send waits on: due when the action may go out."""
    return Timer(
        timer_id=timer_id,
        customer_id=action.customer_id,
        journey=action.journey,
        journey_version=action.journey_version,
        instance_id=action.instance_id,
        step_id=action.step_id,
        due_at=action.not_before,
    )
