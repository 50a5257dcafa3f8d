"""The reference sender for SMS, push, staff tasks and offers: one provider-neutral webhook.

A JSON POST per action to POLKU_WEBHOOK_URL, with `Idempotency-Key: <action_id>` so the
provider drops repeats, the rendered text, the address when the channel needs one, and the
action's params for providers that template themselves. 2xx is success; 408, 409, 425, 429 and
5xx are retried (honouring Retry-After); 401/403 stop the sender (its credentials are wrong for
every action); any other 4xx fails the action.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import aiohttp
import orjson

from schemas import Action, ContactChannel
from streams._settings import Settings
from streams.senders._backoff import parse_retry_after
from streams.senders._contacts import Contact, ContactBook, ContactDirectory
from streams.senders._errors import (
    PermanentDeliveryError,
    SenderConfigError,
    TransientDeliveryError,
)
from streams.senders._loop import Delivered
from streams.senders._redact import redact
from streams.senders._templates import TemplateRenderer

WEBHOOK_CHANNELS = frozenset(ContactChannel) - {ContactChannel.EMAIL}
_RETRIED_STATUSES = frozenset({408, 409, 425, 429})
_STOPPING_STATUSES = frozenset({401, 403})


@dataclass(frozen=True)
class WebhookCall:
    action_id: str
    body: bytes


class WebhookSender:
    def __init__(
        self,
        settings: Settings,
        channel: ContactChannel,
        *,
        renderer: TemplateRenderer | None = None,
        contacts: ContactDirectory | None = None,
    ) -> None:
        if channel not in WEBHOOK_CHANNELS:
            raise SenderConfigError(f"the webhook sender cannot send {channel.value!r}")
        if not settings.webhook_url:
            raise SenderConfigError("POLKU_WEBHOOK_URL is not set: where to POST the actions")
        self.channel = channel
        self._settings = settings
        self._url = settings.webhook_url
        self._renderer = renderer or TemplateRenderer(settings.sender_templates_dir)
        self._contacts = contacts or ContactBook.from_file(settings.sender_contacts_file)
        self._session: aiohttp.ClientSession | None = None

    @property
    def attempt_timeout_seconds(self) -> float:
        return self._settings.webhook_timeout_seconds

    def prepare(self, action: Action) -> WebhookCall:
        contact = self._contacts.lookup(action)
        rendered = self._renderer.render(action, contact)
        document = {
            "action_id": action.action_id,
            "channel": action.channel.value,
            "template": action.template,
            "customer_id": action.customer_id,
            "to": self._address(contact),
            "content": dict(rendered.parts),
            "params": action.params,
            "journey": action.journey,
            "journey_version": action.journey_version,
            "step_id": action.step_id,
            "priority": action.priority,
            "created_at": action.created_at.isoformat(),
            "not_before": action.not_before.isoformat(),
        }
        return WebhookCall(action.action_id, orjson.dumps(document))

    def _address(self, contact: Contact) -> dict[str, str]:
        if self.channel is ContactChannel.SMS:
            if not contact.phone:
                raise PermanentDeliveryError("no_contact", "no phone number for this customer")
            return {"phone": contact.phone}
        # push, staff tasks and offers are addressed by customer id (device tokens, stores and
        # wallets are the provider's to look up); pass on what is known anyway
        return contact.model_dump(exclude_none=True, include={"email", "phone"})

    async def deliver(self, prepared: WebhookCall) -> Delivered:
        session = self._session or self._open_session()
        headers = self._headers(prepared.action_id)
        timeout = aiohttp.ClientTimeout(total=self._settings.webhook_timeout_seconds)
        try:
            async with session.post(
                self._url, data=prepared.body, headers=headers, timeout=timeout
            ) as response:
                body = await response.read()
                return _judge(response.status, response.headers, body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail = f"{type(exc).__name__}: {redact(str(exc))}"
            raise TransientDeliveryError("webhook_unavailable", detail) from None

    def _open_session(self) -> aiohttp.ClientSession:
        self._session = aiohttp.ClientSession(raise_for_status=False)
        return self._session

    def _headers(self, action_id: str) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": action_id,
            "User-Agent": "polku-sender",
        }
        if self._settings.webhook_token is not None:
            headers["Authorization"] = f"Bearer {self._settings.webhook_token.get_secret_value()}"
        return headers

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _judge(status: int, headers: Mapping[str, str], body: bytes) -> Delivered:
    if 200 <= status < 300:
        return Delivered(_reported_status(body))
    detail = f"HTTP {status}: {redact(body[:200].decode(errors='replace'))}".strip()
    if status >= 500 or status in _RETRIED_STATUSES:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        raise TransientDeliveryError("webhook_unavailable", detail, retry_after=retry_after)
    if status in _STOPPING_STATUSES:
        raise SenderConfigError(f"the webhook refused polku's credentials: {detail}")
    raise PermanentDeliveryError("webhook_rejected", detail)


def _reported_status(body: bytes) -> Literal["sent", "delivered"]:
    """`delivered` when the provider's JSON reply says so, else `sent` (it accepted it)."""
    try:
        reply = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return "sent"
    if isinstance(reply, dict) and reply.get("status") == "delivered":
        return "delivered"
    return "sent"
