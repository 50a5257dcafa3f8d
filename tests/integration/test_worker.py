"""The worker end to end: a real broker, `polku worker` in its own process, real Kafka clients."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Message

from journeys import CustomerState, Engine, load_journeys
from schemas import (
    Action,
    CartAbandoned,
    CartPayload,
    CustomerRef,
    LineItem,
    OrderPlaced,
    OrderPlacedPayload,
    ProductViewed,
    ProductViewedPayload,
    SourceChannel,
    Suppression,
    Touchpoint,
    decode_action,
)
from streams import Settings, TouchpointProducer
from tests.integration.harness import (
    FAST_JOURNEYS,
    SLOW_JOURNEYS,
    TopicReader,
    WorkerProcess,
    committed_offset,
    isolated_settings,
    produce,
    wait_for,
    wait_until_committed,
)

pytestmark = pytest.mark.integration

ACTION_TIMEOUT = 45.0
ITEMS = [LineItem(sku="TRAIL-42", name="Trail shoe", unit_price="89.90", size="42")]


def cart_abandoned(customer_id: str, event_id: str, phone: str | None = None) -> CartAbandoned:
    return CartAbandoned(
        event_id=event_id,
        occurred_at=datetime(2026, 11, 23, 12, 0, tzinfo=UTC),
        channel=SourceChannel.WEB,
        customer=CustomerRef(customer_id=customer_id, phone=phone),
        payload=CartPayload(cart_id=f"cart-{event_id}", items=ITEMS),
    )


def order_placed(customer_id: str, event_id: str) -> OrderPlaced:
    return OrderPlaced(
        event_id=event_id,
        occurred_at=datetime(2026, 11, 23, 12, 5, tzinfo=UTC),
        channel=SourceChannel.STORE,
        customer=CustomerRef(customer_id=customer_id),
        payload=OrderPlacedPayload(
            order_id=f"order-{event_id}", items=ITEMS, total="89.90", currency="EUR"
        ),
    )


def expected_email(journeys_dir: Path, event: Touchpoint) -> Action:
    """What the pure engine says the worker must emit: the ids do not depend on the clock."""
    engine = Engine(load_journeys(journeys_dir))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    entered = engine.advance(CustomerState(customer_id=event.customer.key), event, now)
    timer = entered.timers[0]
    fired = engine.advance(entered.state, timer.fired_event(timer.due_at), timer.due_at)
    assert len(fired.actions) == 1
    return fired.actions[0]


def actions_for(messages: list[Message], customer_id: str) -> list[Action]:
    return [
        action
        for action in (decode_action(m.value() or b"") for m in messages)
        if action.customer_id == customer_id
    ]


class Running:
    """A worker plus readers of its output topics, cleaned up whatever happens."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.settings = settings
        bootstrap = settings.require_bootstrap()
        self.email = TopicReader(bootstrap, [settings.action_topic("email")])
        self.sms = TopicReader(bootstrap, [settings.action_topic("sms")])
        self.dead_letter = TopicReader(bootstrap, [settings.dead_letter_topic])
        self.worker = WorkerProcess(settings, tmp_path / "worker.log").start()

    def close(self) -> None:
        for reader in (self.email, self.sms, self.dead_letter):
            reader.close()
        self.worker.stop()


@pytest.fixture
def running(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Running]:
    run = Running(isolated_settings(kafka_bootstrap, tmp_path / "data"), tmp_path)
    try:
        yield run
    except BaseException:
        print(run.worker.log_tail())
        raise
    finally:
        run.close()


def test_cart_abandoned_yields_the_email_action_after_the_wait(running: Running) -> None:
    event = cart_abandoned("cust-email", "ev-email-1")
    produce(running.settings, event)

    running.email.wait_for(
        lambda ms: bool(actions_for(ms, "cust-email")), ACTION_TIMEOUT, "the reminder email"
    )

    [action] = actions_for(running.email.messages, "cust-email")
    want = expected_email(FAST_JOURNEYS, event)
    assert action.action_id == want.action_id
    assert action.template == "cart_reminder"
    assert action.params["items"] == [item.model_dump(mode="json") for item in ITEMS]
    # the wait is 2 s and the action is stamped with the worker's clock, after the timer fired
    assert action.created_at >= action.not_before
    assert (
        'polku_actions_emitted_total{channel="email",journey="cart_fast",step="email_reminder"} 1.0'
        in (running.worker.metrics())
    )


def test_a_worker_told_to_stop_stops_cleanly(running: Running) -> None:
    # after it has processed something, so that the agent waits for its next batch
    produce(running.settings, cart_abandoned("cust-stop", "ev-stop-1"))
    running.email.wait_for(
        lambda ms: bool(actions_for(ms, "cust-stop")), ACTION_TIMEOUT, "the reminder email"
    )
    assert running.worker.stop() == 0
    log = running.worker.log_path.read_text(errors="replace")
    assert "Crashed" not in log
    assert "Traceback" not in log


def test_an_order_before_the_wait_ends_means_no_email(running: Running) -> None:
    produce(
        running.settings,
        cart_abandoned("cust-buyer", "ev-buyer-1"),
        order_placed("cust-buyer", "ev-buyer-2"),
    )
    # a sentinel customer abandons a cart later: once its email is out, the buyer's timer
    # (due earlier) would have fired too, had the order not cancelled it
    time.sleep(1.0)
    produce(running.settings, cart_abandoned("cust-sentinel", "ev-sentinel-1"))

    running.email.wait_for(
        lambda ms: bool(actions_for(ms, "cust-sentinel")), ACTION_TIMEOUT, "the sentinel email"
    )
    running.email.poll(1.0)
    assert actions_for(running.email.messages, "cust-buyer") == []
    metrics = running.worker.metrics()
    assert 'polku_journey_transitions_total{journey="cart_fast",kind="exited"} 1.0' in metrics


def test_malformed_events_are_dead_lettered_and_the_stream_goes_on(running: Running) -> None:
    not_json = b'{"type": "cart.abandoned", "event_id": '
    wrong_shape = orjson.dumps({"type": "cart.abandoned", "event_id": "x", "customer": {}})
    producer = TouchpointProducer(running.settings)
    producer.send_raw(b"junk-key", not_json)
    producer.send_raw(b"junk-key", wrong_shape)
    producer.send(cart_abandoned("cust-after-junk", "ev-after-junk-1"))
    assert producer.close() == 3

    dead = running.dead_letter.wait_for(lambda ms: len(ms) >= 2, ACTION_TIMEOUT, "two dead letters")
    running.email.wait_for(
        lambda ms: bool(actions_for(ms, "cust-after-junk")),
        ACTION_TIMEOUT,
        "the email of the good event after the bad ones",
    )

    assert sorted(m.value() or b"" for m in dead) == sorted([not_json, wrong_shape])
    reasons = {m.value(): _header(m, "polku.error.reason") for m in dead}
    assert reasons[not_json].startswith(b"not JSON")
    assert b"occurred_at" in reasons[wrong_shape]
    assert b"Field required" in reasons[wrong_shape]
    for message in dead:
        assert _header(message, "polku.error.topic") == running.settings.touchpoints_topic.encode()
        assert message.key() == b"junk-key"
    metrics = running.worker.metrics()
    assert re.search(r'polku_events_dead_lettered_total\{reason="invalid_event"\} 2\.0', metrics)


@pytest.mark.parametrize("local_state", ["kept", "lost"])
def test_a_pending_timer_survives_sigkill_and_restart(
    kafka_bootstrap: str, tmp_path: Path, local_state: str
) -> None:
    """Kill -9 while the timer waits; a new worker still sends the email, once per action_id.

    "lost" restarts on an empty data directory, as on a new machine: the timer and the journey
    state then come back from the changelog topics alone.
    """
    settings = isolated_settings(kafka_bootstrap, tmp_path / "data", journeys_dir=SLOW_JOURNEYS)
    event = cart_abandoned("cust-restart", "ev-restart-1", phone="+358401234567")
    with (
        restarted(settings, tmp_path) as run,
        closing(TopicReader(kafka_bootstrap, [settings.action_topic("email")])) as email,
    ):
        produce(settings, event)
        wait_until_committed(settings, run.first)
        run.first.kill()
        assert actions_for(email.poll(0.5), "cust-restart") == [], "email came before the kill"
        if local_state == "lost":
            shutil.rmtree(settings.data_dir)

        run.start_second()
        email.wait_for(
            lambda ms: bool(actions_for(ms, "cust-restart")), ACTION_TIMEOUT, "the email"
        )
        email.poll(1.0)
        ids = {action.action_id for action in actions_for(email.messages, "cust-restart")}
        assert ids == {expected_email(SLOW_JOURNEYS, event).action_id}


class Restart:
    """A worker, and later a second one on the same settings (after the first is killed)."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self._settings = settings
        self._tmp_path = tmp_path
        self.first = WorkerProcess(settings, tmp_path / "worker-1.log").start()
        self.second: WorkerProcess | None = None

    def start_second(self) -> WorkerProcess:
        self.second = WorkerProcess(self._settings, self._tmp_path / "worker-2.log").start()
        return self.second


@contextmanager
def restarted(settings: Settings, tmp_path: Path) -> Iterator[Restart]:
    run = Restart(settings, tmp_path)
    try:
        yield run
    except BaseException:
        print(run.first.log_tail(), run.second.log_tail() if run.second else "")
        raise
    finally:
        run.first.stop()
        if run.second:
            run.second.stop()


BACKLOG = 6000


def _viewed(n: int) -> ProductViewed:
    return ProductViewed(
        event_id=f"ev-view-{n}",
        occurred_at=datetime(2026, 11, 23, 12, 1, tzinfo=UTC),
        channel=SourceChannel.WEB,
        customer=CustomerRef(customer_id=f"cust-viewer-{n}"),
        payload=ProductViewedPayload(sku="TRAIL-42"),
    )


def _wait_committed(settings: Settings, touchpoints: int, worker: WorkerProcess) -> None:
    wait_for(
        lambda: committed_offset(settings, settings.touchpoints_topic) >= touchpoints,
        f"{touchpoints} touchpoints committed",
        120.0,
        worker,
    )


def test_a_timer_due_while_its_customer_s_order_waits_in_a_backlog_does_not_overtake_it(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # the rebalance test once sent such a reminder: the worker that took the partition over
    # fired the overdue timer before it had read the order. Made certain here: one partition,
    # the order behind thousands of other events, the worker back only once the timer is due.
    settings = isolated_settings(
        kafka_bootstrap, tmp_path / "data", journeys_dir=SLOW_JOURNEYS, partitions=1
    )
    with (
        restarted(settings, tmp_path) as run,
        closing(TopicReader(kafka_bootstrap, [settings.action_topic("email")])) as email,
    ):
        produce(settings, _viewed(-1))
        _wait_committed(settings, 1, run.first)  # up and running: the cart is processed at once
        produce(settings, cart_abandoned("cust-backlog", "ev-backlog-cart"))
        carted = time.monotonic()
        _wait_committed(settings, 2, run.first)
        run.first.kill()
        producer = TouchpointProducer(settings)
        for n in range(BACKLOG):
            producer.send(_viewed(n))
        producer.send(order_placed("cust-backlog", "ev-backlog-order"))
        assert producer.close() == BACKLOG + 1
        assert time.monotonic() - carted < 8.0, "the order came after the reminder was due"
        time.sleep(max(0.0, carted + 9.0 - time.monotonic()))  # the reminder is overdue now

        second = run.start_second()
        _wait_committed(settings, BACKLOG + 3, second)
        email.poll(3.0)
        # the second worker came back with the reminder's timer pending and overdue
        assert "timer index rebuilt: 1 pending timers" in second.log_path.read_text()
        assert actions_for(email.messages, "cust-backlog") == []


def _header(message: Message, name: str) -> bytes:
    value = dict(message.headers() or [])[name]
    assert isinstance(value, bytes)
    return value


def test_the_strict_policy_suppresses_an_unconsented_send_and_records_why(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # no policy file: the production defaults, where marketing needs an opt-in
    settings = isolated_settings(kafka_bootstrap, tmp_path / "data", contact_policy_file=None)
    suppressed = TopicReader(kafka_bootstrap, [settings.suppressed_topic])
    email = TopicReader(kafka_bootstrap, [settings.action_topic("email")])
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        produce(settings, cart_abandoned("cust-no-consent", "ev-no-consent-1"))
        [record] = suppressed.wait_for(lambda ms: len(ms) >= 1, ACTION_TIMEOUT, "a suppression")
        email.poll(1.0)
    except BaseException:
        print(worker.log_tail())
        raise
    finally:
        suppressed.close()
        email.close()
        worker.stop()
    found = Suppression.model_validate_json(record.value() or b"")
    assert (found.customer_id, found.journey, found.step_id, found.reason) == (
        "cust-no-consent",
        "cart_fast",
        "email_reminder",
        "no_consent",
    )
    assert actions_for(email.messages, "cust-no-consent") == []
