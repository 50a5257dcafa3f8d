"""The webhook sender against a real aiohttp server on 127.0.0.1: no broker needed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from pydantic import SecretStr

from schemas import ContactChannel
from streams import Settings, free_port
from streams.senders import (
    Contact,
    ContactBook,
    PermanentDeliveryError,
    SenderConfigError,
    TransientDeliveryError,
    WebhookSender,
)
from tests.streams.channels.builders import make_action
from tests.streams.channels.servers import Reply, WebhookServer

COUPON = {"cart_id": "c-1", "coupon_code": "CART10", "discount_percent": 10}
CONTACTS = ContactBook({"aino": Contact(phone="+358401110001", first_name="Aino")})


def _sender(
    url: str, channel: ContactChannel = ContactChannel.SMS, **overrides: Any
) -> WebhookSender:
    values: dict[str, Any] = {
        "kafka_bootstrap": "127.0.0.1:1",
        "webhook_url": url,
        "webhook_token": SecretStr("tok-1"),
        "webhook_timeout_seconds": 5,
    }
    return WebhookSender(Settings(**(values | overrides)), channel, contacts=CONTACTS)


@pytest_asyncio.fixture
async def sender_and_hook(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[WebhookSender, WebhookServer]]:
    script: list[Reply] = getattr(request, "param", [])
    async with WebhookServer(script) as hook:
        sender = _sender(hook.url)
        try:
            yield sender, hook
        finally:
            await sender.aclose()


def _sms() -> Any:
    return make_action(channel="sms", template="cart_coupon", params=COUPON)


@pytest.mark.asyncio
async def test_a_provider_neutral_post_with_the_idempotency_key(
    sender_and_hook: tuple[WebhookSender, WebhookServer],
) -> None:
    sender, hook = sender_and_hook
    action = _sms()
    delivered = await sender.deliver(sender.prepare(action))

    assert delivered.status == "sent"
    [call] = hook.calls
    assert call.headers["Idempotency-Key"] == action.action_id
    assert call.headers["Authorization"] == "Bearer tok-1"
    assert call.headers["Content-Type"] == "application/json"
    assert call.body["to"] == {"phone": "+358401110001"}
    assert call.body["content"] == {
        "text": "Aino, your cart is still waiting: 10% off with code CART10.\n"
    }
    assert call.body["params"] == COUPON
    assert call.body["action_id"] == action.action_id
    assert call.body["channel"] == "sms"
    assert call.body["template"] == "cart_coupon"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "sender_and_hook", [[Reply(200, body=b'{"status": "delivered"}')]], indirect=True
)
async def test_a_provider_that_confirms_delivery_gives_a_delivered_receipt(
    sender_and_hook: tuple[WebhookSender, WebhookServer],
) -> None:
    sender, _ = sender_and_hook
    assert (await sender.deliver(sender.prepare(_sms()))).status == "delivered"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("reply", "retry_after"),
    [
        (Reply(503, body=b"maintenance"), None),
        (Reply(429, {"Retry-After": "1"}, b"slow down"), 1.0),
        (Reply(500, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), 0.0),
        (Reply(408), None),
    ],
)
async def test_5xx_and_429_are_transient_with_the_providers_retry_after(
    reply: Reply, retry_after: float | None
) -> None:
    async with WebhookServer([reply]) as hook:
        sender = _sender(hook.url)
        with pytest.raises(TransientDeliveryError) as raised:
            await sender.deliver(sender.prepare(_sms()))
        await sender.aclose()
    assert raised.value.retry_after == retry_after
    assert raised.value.detail.startswith(f"HTTP {reply.status}")


@pytest.mark.asyncio
async def test_other_4xx_fail_the_action_with_the_reason_redacted() -> None:
    async with WebhookServer([Reply(400, body=b"invalid number +358401110001")]) as hook:
        sender = _sender(hook.url)
        with pytest.raises(PermanentDeliveryError) as raised:
            await sender.deliver(sender.prepare(_sms()))
        await sender.aclose()
    assert (raised.value.kind, raised.value.status) == ("webhook_rejected", "failed")
    assert raised.value.detail == "HTTP 400: invalid number <phone>"


@pytest.mark.asyncio
async def test_refused_credentials_stop_the_sender() -> None:
    async with WebhookServer([Reply(401)]) as hook:
        sender = _sender(hook.url)
        with pytest.raises(SenderConfigError, match="HTTP 401"):
            await sender.deliver(sender.prepare(_sms()))
        await sender.aclose()


@pytest.mark.asyncio
async def test_no_server_is_transient() -> None:
    sender = _sender(f"http://127.0.0.1:{free_port()}/hook")
    with pytest.raises(TransientDeliveryError, match="webhook_unavailable"):
        await sender.deliver(sender.prepare(_sms()))
    await sender.aclose()


def test_an_sms_needs_a_phone_number_but_a_staff_task_does_not() -> None:
    with pytest.raises(PermanentDeliveryError, match="no_contact"):
        _sender("http://127.0.0.1:9/").prepare(
            make_action(channel="sms", template="cart_coupon", params=COUPON, customer_id="x")
        )
    task = make_action(
        channel="staff_task",
        template="churn_call",
        params={"score": 0.9, "segment": "loyal"},
        customer_id="x",
    )
    sender = _sender("http://127.0.0.1:9/", ContactChannel.STAFF_TASK)
    assert b'"to":{}' in sender.prepare(task).body


def test_the_webhook_sender_needs_a_url_and_a_webhook_channel() -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:1")
    with pytest.raises(SenderConfigError, match="POLKU_WEBHOOK_URL"):
        WebhookSender(settings, ContactChannel.SMS)
    with pytest.raises(SenderConfigError, match="cannot send 'email'"):
        WebhookSender(settings, ContactChannel.EMAIL)
