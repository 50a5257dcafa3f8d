"""Channels in, senders out, on a real broker: the HTTP collector, `polku worker`, the SMTP and
webhook senders, real SMTP and HTTP servers on 127.0.0.1, and real subprocesses for the crash
test. Timeouts here are failure guards only, never assertions about speed."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from confluent_kafka import Consumer, Message, TopicPartition
from pydantic import SecretStr

from journeys import CustomerState, Engine, load_journeys
from schemas import (
    Action,
    ContactChannel,
    MessageReceipt,
    Touchpoint,
    decode_touchpoint,
    encode,
    stable_id,
    touchpoint_from_dict,
)
from streams import Settings, TouchpointProducer, build_collector_app, free_port
from streams.senders import SenderLoop, SenderMetrics, WebhookSender
from tests.integration.harness import (
    FAST_JOURNEYS,
    PolkuProcess,
    TopicReader,
    WorkerProcess,
    isolated_settings,
)
from tests.streams.channels.builders import make_action
from tests.streams.channels.servers import Reply, SmtpSink, WebhookServer, body_text

pytestmark = pytest.mark.integration

TIMEOUT = 60.0
API_KEY = "integration-key"
COUPON = {"cart_id": "c-1", "coupon_code": "CART10", "discount_percent": 10}
PHONE_CUSTOMER = "phone:+358401110001"


def channel_settings(bootstrap: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "sender_state_dir": tmp_path / "sender-state",
        "sender_backoff_initial_seconds": 0.2,
        "sender_backoff_max_seconds": 5.0,
        "sender_poll_seconds": 0.2,
        "collector_api_keys": SecretStr(API_KEY),
        "collector_port": free_port(),
        "smtp_host": "127.0.0.1",
        "smtp_security": "none",
        "smtp_from": "Polku Shop <shop@polku.example>",
        "smtp_timeout_seconds": 10.0,
    }
    return isolated_settings(bootstrap, tmp_path / "data", **(values | overrides))


def own_metrics_port(settings: Settings) -> Settings:
    """The same settings for another process, which must not bind the same metrics port."""
    return settings.model_copy(update={"metrics_port": free_port()})


@contextmanager
def processes(*running: PolkuProcess) -> Iterator[None]:
    """Stop them all whatever happens; print their logs when the test fails."""
    try:
        yield
    except BaseException:
        for process in running:
            print(process.log_tail())
        raise
    finally:
        for process in running:
            process.stop()


def post_json(url: str, body: Any, api_key: str = API_KEY) -> tuple[int, Any]:
    request = urllib.request.Request(
        url,
        data=orjson.dumps(body),
        headers={"Content-Type": "application/json", "X-API-Key": api_key},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def wait_until_healthy(settings: Settings, process: PolkuProcess) -> None:
    url = f"http://127.0.0.1:{settings.collector_port}/healthz"
    deadline = time.monotonic() + TIMEOUT
    while True:
        assert process.alive(), process.log_tail()
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("the collector never answered /healthz")
        time.sleep(0.1)


def produce_actions(settings: Settings, *actions: Action) -> None:
    producer = TouchpointProducer(settings)
    for action in actions:
        producer.submit_raw(
            action.customer_id.encode(), encode(action), topic=settings.action_topic(action.channel)
        )
    producer.close()


def receipts(messages: list[Message]) -> list[MessageReceipt]:
    found = []
    for message in messages:
        event = decode_touchpoint(message.value() or b"")
        if isinstance(event, MessageReceipt):
            found.append(event)
    return found


def receipts_for(messages: list[Message], action_id: str) -> list[MessageReceipt]:
    return [r for r in receipts(messages) if r.payload.action_id == action_id]


def group_committed(settings: Settings, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": settings.require_bootstrap(), "group.id": group})
    try:
        metadata = consumer.list_topics(timeout=10).topics[topic]
        partitions = [TopicPartition(topic, p) for p in metadata.partitions]
        return sum(max(tp.offset, 0) for tp in consumer.committed(partitions, timeout=10))
    finally:
        consumer.close()


def header(message: Message, name: str) -> bytes:
    value = dict(message.headers() or [])[name]
    assert isinstance(value, bytes)
    return value


def emitted_email(event: Touchpoint) -> Action:
    """What the pure engine says the worker emits for this cart (ids do not depend on time)."""
    engine = Engine(load_journeys(FAST_JOURNEYS))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    entered = engine.advance(CustomerState(customer_id=event.customer.key), event, now)
    timer = entered.timers[0]
    [action] = engine.advance(entered.state, timer.fired_event(timer.due_at), timer.due_at).actions
    return action


# --- end to end ----------------------------------------------------------------------------


def test_collector_to_worker_to_smtp_and_a_receipt_back(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    contacts = tmp_path / "contacts.json"
    contacts.write_bytes(
        orjson.dumps({"e2e-aino": {"email": "aino@example.com", "first_name": "Aino"}})
    )
    cart = {
        "type": "cart.abandoned",
        "event_id": "pos-e2e-1",
        "occurred_at": datetime.now(UTC).isoformat(),
        "channel": "web",
        "customer": {"customer_id": "e2e-aino", "email": "aino@example.com"},
        "payload": {
            "cart_id": "c-e2e",
            "items": [
                {"sku": "TRAIL-42", "name": "Trail shoe", "quantity": 1, "unit_price": "89.90"},
                {"sku": "SOCK-7", "name": "Merino sock", "quantity": 3, "unit_price": "12.00"},
            ],
            "currency": "EUR",
            "cart_url": "https://shop.example/cart/c-e2e",
        },
    }
    want = emitted_email(touchpoint_from_dict(cart))
    with SmtpSink() as smtp:
        settings = channel_settings(
            kafka_bootstrap, tmp_path, smtp_port=smtp.port, sender_contacts_file=contacts
        )
        touchpoints = TopicReader(kafka_bootstrap, [settings.touchpoints_topic])
        worker = WorkerProcess(settings, tmp_path / "worker.log").start()
        collector = PolkuProcess(own_metrics_port(settings), ["collector"], tmp_path / "c.log")
        sender = PolkuProcess(own_metrics_port(settings), ["sender", "email"], tmp_path / "s.log")
        with processes(worker, collector.start(), sender.start()):
            wait_until_healthy(settings, collector)
            url = f"http://127.0.0.1:{settings.collector_port}/v1/touchpoints"

            assert post_json(url, cart) == (202, {"accepted": 1, "event_ids": ["pos-e2e-1"]})

            [message] = smtp.wait_for(lambda ms: len(ms) >= 1, TIMEOUT, "the reminder email")
            touchpoints.wait_for(
                lambda ms: bool(receipts_for(ms, want.action_id)), TIMEOUT, "the receipt"
            )
            touchpoints.poll(1.0)
            assert sender.alive(), sender.log_tail()
        touchpoints.close()

    assert message["To"] == "aino@example.com"
    assert message["Message-ID"] == f"<{want.action_id}@polku.example>"
    assert message["Subject"] == "Aino, your cart is waiting for you"
    text = body_text(message, "plain")
    # the journey passes the cart's items but not its currency
    assert "- 1 x Trail shoe: 89.90 EUR\n" in text.replace("\r\n", "\n")
    assert "- 3 x Merino sock: 36.00 EUR\n" in text.replace("\r\n", "\n")
    assert "https://shop.example/cart/c-e2e" in text
    assert "Merino sock" in body_text(message, "html")
    [receipt] = receipts_for(touchpoints.messages, want.action_id)
    assert receipt.payload.status == "sent"
    assert receipt.customer.key == "e2e-aino"
    assert receipt.event_id == f"receipt-{stable_id(want.action_id, 'sent')}"
    assert len(smtp.messages) == 1


# --- crash safety -------------------------------------------------------------------------


def test_a_sender_killed_after_sending_but_before_committing_does_not_send_again(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    first = make_action(customer_id="email:first@example.com", seed="kill-1")
    second = make_action(customer_id="email:second@example.com", seed="kill-2")
    with SmtpSink() as smtp:
        # commits only at shutdown: the kill lands after the send and before any commit
        settings = channel_settings(
            kafka_bootstrap, tmp_path, smtp_port=smtp.port, sender_commit_interval_seconds=3600
        )
        group = settings.sender_group(ContactChannel.EMAIL)
        topic = settings.action_topic(ContactChannel.EMAIL)
        touchpoints = TopicReader(kafka_bootstrap, [settings.touchpoints_topic])
        produce_actions(settings, first)
        killed = PolkuProcess(own_metrics_port(settings), ["sender", "email"], tmp_path / "1.log")
        with processes(killed.start()):
            smtp.wait_for(lambda ms: len(ms) == 1, TIMEOUT, "the first email")
            touchpoints.wait_for(
                lambda ms: bool(receipts_for(ms, first.action_id)), TIMEOUT, "its receipt"
            )
            assert group_committed(settings, group, topic) == 0, "committed before the kill"
            killed.kill()

        produce_actions(settings, second)
        restarted = PolkuProcess(
            own_metrics_port(settings), ["sender", "email"], tmp_path / "2.log"
        )
        with processes(restarted.start()):
            smtp.wait_for(lambda ms: len(ms) >= 2, TIMEOUT, "the second email")
            touchpoints.wait_for(
                lambda ms: bool(receipts_for(ms, second.action_id)), TIMEOUT, "its receipt"
            )
            assert restarted.stop() == 0, restarted.log_tail()
        sent = Counter(message["X-Polku-Action-Id"] for message in smtp.messages)
        touchpoints.close()

    assert sent == {first.action_id: 1, second.action_id: 1}
    # the graceful stop committed both: the first (skipped as already sent) and the second
    assert group_committed(settings, group, topic) == 2
    assert len(receipts_for(touchpoints.messages, first.action_id)) == 1


# --- the sender loop in this process, against a real webhook ------------------------------


@asynccontextmanager
async def sender_loop(settings: Settings, channel: ContactChannel) -> AsyncIterator[SenderLoop]:
    loop = SenderLoop(settings, WebhookSender(settings, channel), metrics=SenderMetrics())
    task = asyncio.create_task(loop.run())
    try:
        yield loop
    finally:
        loop.stop()
        await asyncio.wait_for(task, 30)


async def wait_for_messages(reader: TopicReader, found: Any, why: str) -> list[Message]:
    # in a thread: the sender loop and the webhook server share this event loop
    return await asyncio.to_thread(reader.wait_for, found, TIMEOUT, why)


def sms(seed: str, template: str = "cart_coupon", **changes: Any) -> Action:
    return make_action(
        channel="sms", template=template, params=COUPON, customer_id=PHONE_CUSTOMER, seed=seed,
        **changes,
    )  # fmt: skip


@pytest.mark.asyncio
async def test_a_webhook_failing_503_then_429_is_called_three_times_and_delivers_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    script = [Reply(503, body=b"maintenance"), Reply(429, {"Retry-After": "1"}, b"slow down")]
    async with WebhookServer(script) as hook:
        settings = channel_settings(kafka_bootstrap, tmp_path, webhook_url=hook.url)
        action = sms("retry-1")
        touchpoints = TopicReader(kafka_bootstrap, [settings.touchpoints_topic])
        produce_actions(settings, action)
        async with sender_loop(settings, ContactChannel.SMS) as loop:
            await wait_for_messages(
                touchpoints, lambda ms: bool(receipts_for(ms, action.action_id)), "the receipt"
            )
            await asyncio.to_thread(touchpoints.poll, 1.0)
        touchpoints.close()

    assert [call.headers["Idempotency-Key"] for call in hook.calls] == [action.action_id] * 3
    # the third call waited for the provider's Retry-After
    assert hook.calls[2].monotonic - hook.calls[1].monotonic >= 1.0
    [receipt] = receipts_for(touchpoints.messages, action.action_id)
    assert receipt.payload.status == "sent"
    assert receipt.customer.key == PHONE_CUSTOMER
    sample = loop.metrics.registry.get_sample_value
    assert sample("polku_sender_attempts_total", {"channel": "sms", "result": "transient"}) == 2
    assert sample("polku_sender_retries_total", {"channel": "sms"}) == 2
    assert sample("polku_sender_outcomes_total", {"channel": "sms", "outcome": "sent"}) == 1


@pytest.mark.asyncio
async def test_after_the_last_attempt_the_action_is_dead_lettered_with_the_last_error(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    script = [Reply(503, body=b"first outage"), Reply(502, body=b"second outage")]
    async with WebhookServer(script) as hook:
        settings = channel_settings(
            kafka_bootstrap, tmp_path, webhook_url=hook.url, sender_max_attempts=2
        )
        action = sms("exhaust-1")
        touchpoints = TopicReader(kafka_bootstrap, [settings.touchpoints_topic])
        dead_letters = TopicReader(kafka_bootstrap, [settings.dead_letter_topic])
        produce_actions(settings, action)
        async with sender_loop(settings, ContactChannel.SMS):
            [dead] = await wait_for_messages(dead_letters, lambda ms: len(ms) >= 1, "dead letter")
            await wait_for_messages(
                touchpoints, lambda ms: bool(receipts_for(ms, action.action_id)), "the receipt"
            )
        touchpoints.close()
        dead_letters.close()

    assert len(hook.calls) == 2
    assert dead.value() == encode(action)
    assert header(dead, "polku.error.kind") == b"retries_exhausted"
    assert header(dead, "polku.error.attempts") == b"2"
    reason = header(dead, "polku.error.reason").decode()
    assert reason == "gave up after 2 attempts: webhook_unavailable: HTTP 502: second outage"
    [failed] = receipts_for(touchpoints.messages, action.action_id)
    assert (failed.payload.status, failed.payload.detail) == ("failed", reason)


@pytest.mark.asyncio
async def test_a_redelivered_action_is_not_sent_twice(kafka_bootstrap: str, tmp_path: Path) -> None:
    async with WebhookServer() as hook:
        settings = channel_settings(kafka_bootstrap, tmp_path, webhook_url=hook.url)
        action, sentinel = sms("dup-1"), sms("dup-2")
        touchpoints = TopicReader(kafka_bootstrap, [settings.touchpoints_topic])
        # the worker re-emits an action after a crash: same action_id, twice on the topic
        produce_actions(settings, action, action, sentinel)
        async with sender_loop(settings, ContactChannel.SMS) as loop:
            await wait_for_messages(
                touchpoints, lambda ms: bool(receipts_for(ms, sentinel.action_id)), "receipts"
            )
            await asyncio.to_thread(touchpoints.poll, 1.0)
        touchpoints.close()

    keys = Counter(call.headers["Idempotency-Key"] for call in hook.calls)
    assert keys == {action.action_id: 1, sentinel.action_id: 1}
    assert len(receipts_for(touchpoints.messages, action.action_id)) == 1
    assert (
        loop.metrics.registry.get_sample_value("polku_sender_duplicates_total", {"channel": "sms"})
        == 1
    )


@pytest.mark.asyncio
async def test_an_action_is_not_sent_before_its_not_before(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with WebhookServer() as hook:
        settings = channel_settings(kafka_bootstrap, tmp_path, webhook_url=hook.url)
        touchpoints = TopicReader(kafka_bootstrap, [settings.touchpoints_topic])
        warm_up = sms("later-0")
        produce_actions(settings, warm_up)
        async with sender_loop(settings, ContactChannel.SMS) as loop:
            # the sender is in its group and delivering: now an action due in a few seconds
            await wait_for_messages(
                touchpoints, lambda ms: bool(receipts_for(ms, warm_up.action_id)), "warm-up"
            )
            not_before = datetime.now(UTC) + timedelta(seconds=3)
            action = sms("later-1", not_before=not_before)
            produce_actions(settings, action)
            await wait_for_messages(
                touchpoints, lambda ms: bool(receipts_for(ms, action.action_id)), "the receipt"
            )
        touchpoints.close()

    [call] = [c for c in hook.calls if c.headers["Idempotency-Key"] == action.action_id]
    assert call.received_at >= not_before
    deferred = loop.metrics.registry.get_sample_value(
        "polku_sender_deferred_total", {"channel": "sms"}
    )
    assert deferred is not None
    assert deferred >= 1


@pytest.mark.asyncio
async def test_a_missing_template_is_dead_lettered_and_the_sender_goes_on(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with WebhookServer() as hook:
        settings = channel_settings(kafka_bootstrap, tmp_path, webhook_url=hook.url)
        orphan, good = sms("tpl-1", template="back_in_stock_sms"), sms("tpl-2")
        touchpoints = TopicReader(kafka_bootstrap, [settings.touchpoints_topic])
        dead_letters = TopicReader(kafka_bootstrap, [settings.dead_letter_topic])
        produce_actions(settings, orphan, good)
        async with sender_loop(settings, ContactChannel.SMS):
            await wait_for_messages(
                touchpoints, lambda ms: bool(receipts_for(ms, good.action_id)), "receipts"
            )
            [dead] = await wait_for_messages(dead_letters, lambda ms: len(ms) >= 1, "dead letter")
        touchpoints.close()
        dead_letters.close()

    assert [call.headers["Idempotency-Key"] for call in hook.calls] == [good.action_id]
    assert dead.value() == encode(orphan)
    assert dead.key() == PHONE_CUSTOMER.encode()
    assert header(dead, "polku.error.kind") == b"template_missing"
    assert header(dead, "polku.error.reason") == (
        b"template_missing: no template sms/back_in_stock_sms.j2"
    )
    assert header(dead, "polku.action.id") == orphan.action_id.encode()
    assert header(dead, "polku.error.topic") == settings.action_topic("sms").encode()
    [failed] = receipts_for(touchpoints.messages, orphan.action_id)
    assert failed.payload.status == "failed"
    assert failed.payload.detail == "template_missing: no template sms/back_in_stock_sms.j2"


# --- malformed POSTs on a real broker ------------------------------------------------------


@pytest.mark.asyncio
async def test_malformed_posts_get_precise_errors_and_produce_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = channel_settings(kafka_bootstrap, tmp_path, collector_max_batch=2)
    touchpoints = TopicReader(kafka_bootstrap, [settings.touchpoints_topic])
    valid = {
        "type": "store.visited",
        "event_id": "pos-ok",
        "occurred_at": "2026-11-23T12:00:00+02:00",
        "channel": "store",
        "customer": {"loyalty_card": "LC-1"},
        "payload": {"store_id": "helsinki-1", "detected_by": "loyalty_card"},
    }
    naive = valid | {"event_id": "pos-naive", "occurred_at": "2026-11-23T12:00:00"}
    cases: list[tuple[bytes, dict[str, str], int, str]] = [
        (b"{", {"X-API-Key": API_KEY}, 400, "not_json"),
        (b"[]", {"X-API-Key": API_KEY}, 400, "empty_batch"),
        (orjson.dumps(valid), {"X-API-Key": "wrong"}, 401, "unauthorized"),
        (orjson.dumps([valid] * 3), {"X-API-Key": API_KEY}, 413, "batch_too_large"),
        (orjson.dumps([valid, naive]), {"X-API-Key": API_KEY}, 422, "invalid_events"),
    ]
    async with TestClient(TestServer(build_collector_app(settings), host="127.0.0.1")) as client:
        answers = []
        for body, headers, _, _ in cases:
            response = await client.post("/v1/touchpoints", data=body, headers=headers)
            answers.append((response.status, (await response.json())["error"]))
        invalid = await (
            await client.post(
                "/v1/touchpoints", data=orjson.dumps([valid, naive]), headers={"X-API-Key": API_KEY}
            )
        ).json()
        accepted = await client.post(
            "/v1/touchpoints", data=orjson.dumps(valid), headers={"X-API-Key": API_KEY}
        )
        assert accepted.status == 202

    assert answers == [(status, error) for _, _, status, error in cases]
    assert invalid["invalid"] == [
        {"index": 1, "errors": ["store.visited.occurred_at: Input should have timezone info"]}
    ]
    # the accepted sentinel is on the topic; nothing of the rejected requests is, even later
    await wait_for_messages(touchpoints, lambda ms: len(ms) >= 1, "the accepted event")
    await asyncio.to_thread(touchpoints.poll, 1.0)
    touchpoints.close()
    assert [m.value() for m in touchpoints.messages] == [encode(touchpoint_from_dict(valid))]
