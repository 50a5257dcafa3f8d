"""A journey step that raises for one customer's event: that event is dead-lettered as a
`journey_error` with the engine's own error text, and nobody else notices.

The fixture journey (tests/fixtures/journeys_error/) waits until a date-time it reads from a
free-text field of the event; two customers send values the engine cannot read as one (free
text, and a date-time without a time zone). Everybody else's actions must equal the set the pure
engine computes offline for the events without those two, and the two customers are not stuck:
their next, well-formed event runs the journey for them as for anybody else.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message, TopicPartition

from journeys import (
    CustomerState,
    Engine,
    JourneyRuntimeError,
    library_journeys,
    load_journeys,
    simulate,
)
from schemas import (
    CustomerRef,
    EventRegistered,
    EventTicketPayload,
    NewsletterPayload,
    NewsletterSubscribed,
    SourceChannel,
    Touchpoint,
    decode_action,
    decode_touchpoint,
    encode,
)
from streams import Settings
from tests.integration.harness import (
    REPO_ROOT,
    TopicReader,
    WorkerProcess,
    isolated_settings,
    produce,
)

pytestmark = pytest.mark.integration

ERROR_JOURNEYS = REPO_ROOT / "tests" / "fixtures" / "journeys_error"
CUSTOMERS = 60
BAD_SOURCES = {"bad-free-text": "next tuesday", "bad-naive": "2026-03-02T10:00:00"}
SETTLE_TIMEOUT = 120.0


def _subscribed(customer_id: str, event_id: str, source: str, at: datetime) -> NewsletterSubscribed:
    return NewsletterSubscribed(
        event_id=event_id,
        occurred_at=at,
        channel=SourceChannel.WEB,
        customer=CustomerRef(customer_id=customer_id),
        payload=NewsletterPayload(list_id="weekly", source=source),
    )


def _scenario() -> tuple[list[Touchpoint], list[NewsletterSubscribed]]:
    """(all events in production order, the malformed ones among them).

    The good start dates are in the past, for the worker (wall clock) and the offline engine
    (event time) alike, so both send the welcome at once and the ids cannot differ."""
    start = datetime.now(UTC)
    past = (start - timedelta(hours=1)).isoformat()
    good = [
        _subscribed(f"ok-{n}", f"signup-{n}", past, start + timedelta(milliseconds=n))
        for n in range(CUSTOMERS)
    ]
    bad = [
        _subscribed(customer, f"signup-{customer}", source, start + timedelta(milliseconds=20))
        for customer, source in BAD_SOURCES.items()
    ]
    # the same customers again with a readable date, after everything else
    later = start + timedelta(seconds=1)
    retried = [
        _subscribed(customer, f"signup-{customer}-again", past, later) for customer in BAD_SOURCES
    ]
    # the bad events in the middle: customers on their partitions come after them
    events: list[Touchpoint] = [*good[:20], *bad, *good[20:], *retried]
    return events, bad


def _engine_error(engine: Engine, event: Touchpoint) -> str:
    with pytest.raises(JourneyRuntimeError) as raised:
        engine.advance(CustomerState(customer_id=event.customer.key), event, event.occurred_at)
    return str(raised.value)


def _wait_for_actions(
    reader: TopicReader, expected: set[str], worker: WorkerProcess, timeout: float
) -> None:
    """Until every expected action is on its topic; an agent that crashed fails at once."""
    deadline = time.monotonic() + timeout
    while not {decode_action(m.value() or b"").action_id for m in reader.messages} >= expected:
        log = worker.log_path.read_text(errors="replace") if worker.log_path.exists() else ""
        crashes = [line for line in log.splitlines() if "Crashed reason=" in line]
        assert not crashes, f"an agent of the worker crashed: {crashes[0]}"
        assert worker.alive(), worker.log_tail()
        assert time.monotonic() < deadline, f"timed out after {timeout}s: {len(expected)} actions"
        reader.poll(0.5)


def _record_at(settings: Settings, topic: str, partition: int, offset: int) -> bytes | None:
    consumer = Consumer(
        {"bootstrap.servers": settings.require_bootstrap(), "group.id": f"check-{uuid.uuid4()}"}
    )
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            record = consumer.poll(0.5)
            if record is not None and not record.error():
                return record.value()
        return None
    finally:
        consumer.close()


def _header(message: Message, name: str) -> str:
    value = dict(message.headers() or [])[name]
    assert isinstance(value, bytes)
    return value.decode()


def test_a_step_raising_for_one_customer_dead_letters_that_event_only(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = isolated_settings(kafka_bootstrap, tmp_path / "data", journeys_dir=ERROR_JOURNEYS)
    engine = Engine(load_journeys(ERROR_JOURNEYS))
    events, bad = _scenario()
    # the fixture does what it is for: the engine raises on exactly these events
    reasons = {event.event_id: _engine_error(engine, event) for event in bad}
    with pytest.raises(JourneyRuntimeError):
        simulate(engine, events)
    bad_ids = set(reasons)
    wanted = simulate(engine, [e for e in events if e.event_id not in bad_ids]).actions
    expected = {a.action_id for a in wanted}
    # welcome and follow-up for everyone, the two bad customers included (their second event)
    assert len(expected) == 2 * (CUSTOMERS + len(BAD_SOURCES))

    actions = TopicReader(kafka_bootstrap, list(settings.action_topics.values()))
    dead_letters = TopicReader(kafka_bootstrap, [settings.dead_letter_topic])
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        produce(settings, *events)
        _wait_for_actions(actions, expected, worker, SETTLE_TIMEOUT)
        dead_letters.wait_for(
            lambda ms: len(ms) >= len(bad), SETTLE_TIMEOUT, f"{len(bad)} dead letters"
        )
        # anything late (a duplicate, an unexpected action or dead letter) shows up too
        actions.poll(2.0)
        dead_letters.poll(0.5)
        assert worker.alive(), worker.log_tail()
        metrics = worker.metrics()
    except BaseException:
        print(worker.log_tail())
        emitted = {decode_action(m.value() or b"").action_id for m in actions.messages}
        missing = sorted((a.customer_id, a.step_id) for a in wanted if a.action_id not in emitted)
        print(f"missing {len(missing)} actions: {missing[:20]}")
        raise
    finally:
        actions.close()
        dead_letters.close()
        worker.stop()

    emitted = {decode_action(m.value() or b"").action_id for m in actions.messages}
    assert emitted == expected, f"unexpected: {sorted(emitted - expected)[:5]}"

    by_event = {decode_touchpoint(m.value() or b"").event_id: m for m in dead_letters.messages}
    assert sorted(by_event) == sorted(bad_ids), "exactly the two malformed events"
    assert len(dead_letters.messages) == len(bad)
    for event in bad:
        message = by_event[event.event_id]
        assert _header(message, "polku.error.kind") == "journey_error"
        assert _header(message, "polku.error.reason") == reasons[event.event_id]
        assert "wait_for_start" in reasons[event.event_id]
        assert "trigger.payload.source" in reasons[event.event_id]
        # where it was read from (the touchpoints topic when the identity step handed it on
        # directly, else the customer topic), under the canonical customer's key, its bytes
        topic = _header(message, "polku.error.topic")
        assert topic in (settings.touchpoints_topic, settings.customer_topic)
        partition = int(_header(message, "polku.error.partition"))
        offset = int(_header(message, "polku.error.offset"))
        assert _record_at(settings, topic, partition, offset) == message.value()
        assert message.key() == event.customer.key.encode()
        assert decode_touchpoint(message.value() or b"") == event
    assert re.search(r'polku_events_dead_lettered_total\{reason="journey_error"\} 2\.0', metrics), (
        "the two journey errors are counted"
    )


def _registered(customer_id: str, event_ref: str, starts_at: datetime) -> EventRegistered:
    return EventRegistered(
        event_id=f"reg-{customer_id}-{event_ref}",
        occurred_at=datetime.now(UTC),
        channel=SourceChannel.EVENT,
        customer=CustomerRef(customer_id=customer_id),
        payload=EventTicketPayload(event_ref=event_ref, name="Outdoor fair", starts_at=starts_at),
    )


def test_a_wait_until_beyond_the_calendar_is_dead_lettered_too(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # the library's event_reminder waits until two days before `starts_at`: for an event on
    # 0001-01-01 (a valid time to the schema, and to the collector) that is before year 1
    settings = isolated_settings(kafka_bootstrap, tmp_path / "data", journeys_dir=None)
    engine = Engine(library_journeys())
    soon = datetime.now(UTC) + timedelta(days=1)
    bad = _registered("out-of-range", "fair-0", datetime(1, 1, 1, tzinfo=UTC))
    with pytest.raises(JourneyRuntimeError, match="too far from the calendar"):
        engine.advance(CustomerState(customer_id=bad.customer.key), bad, bad.occurred_at)
    before = [_registered(f"ok-{n}", "fair", soon) for n in range(10)]
    after = [_registered(f"ok-{n}", "fair", soon) for n in range(10, 20)]
    # the same customer's next registration: once its reminder is out, the bad one is handled
    again = _registered("out-of-range", "fair-1", soon)
    events: list[Touchpoint] = [*before, bad, *after, again]
    wanted = simulate(engine, [e for e in events if e is not bad]).actions
    expected = {a.action_id for a in wanted}
    assert len(expected) == len(before) + len(after) + 1

    actions = TopicReader(kafka_bootstrap, list(settings.action_topics.values()))
    dead_letters = TopicReader(kafka_bootstrap, [settings.dead_letter_topic])
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        produce(settings, *events)
        _wait_for_actions(actions, expected, worker, SETTLE_TIMEOUT)
        dead_letters.wait_for(lambda ms: len(ms) >= 1, SETTLE_TIMEOUT, "the dead letter")
        dead_letters.poll(1.0)  # and nothing more
        assert worker.alive(), worker.log_tail()
    except AssertionError:
        emitted = {decode_action(m.value() or b"").action_id for m in actions.messages}
        missing = sorted(a.customer_id for a in wanted if a.action_id not in emitted)
        print(f"missing the actions of {missing}")
        raise
    finally:
        actions.close()
        dead_letters.close()
        worker.stop()

    assert [m.value() for m in dead_letters.messages] == [encode(bad)], (
        "the event whose step raised is dead-lettered, not dropped"
    )
    assert _header(dead_letters.messages[0], "polku.error.kind") == "journey_error"
