"""The sender SDK and the reference senders (email over SMTP, webhook for SMS, push, ...).

Build a sender for another channel by implementing `ChannelSender` (prepare + deliver) and
running it in a `SenderLoop`: dedupe, retries, not_before, receipts, dead letters and offset
commits come with the loop.
"""

from streams.senders._backoff import RetryPolicy, parse_retry_after
from streams.senders._contacts import Contact, ContactBook, ContactDirectory
from streams.senders._email import SmtpEmailSender
from streams.senders._errors import (
    DeliveryError,
    PermanentDeliveryError,
    SenderConfigError,
    TemplateError,
    TransientDeliveryError,
)
from streams.senders._loop import ChannelSender, Delivered, Outcome, SenderLoop
from streams.senders._metrics import SenderMetrics
from streams.senders._redact import redact
from streams.senders._run import run_sender
from streams.senders._store import ActionRecord, DedupeStore
from streams.senders._templates import (
    BUILT_IN_TEMPLATES,
    CHANNEL_BLOCKS,
    RenderedMessage,
    TemplateRenderer,
)
from streams.senders._webhook import WEBHOOK_CHANNELS, WebhookCall, WebhookSender

__all__ = [
    "BUILT_IN_TEMPLATES",
    "CHANNEL_BLOCKS",
    "WEBHOOK_CHANNELS",
    "ActionRecord",
    "ChannelSender",
    "Contact",
    "ContactBook",
    "ContactDirectory",
    "DedupeStore",
    "Delivered",
    "DeliveryError",
    "Outcome",
    "PermanentDeliveryError",
    "RenderedMessage",
    "RetryPolicy",
    "SenderConfigError",
    "SenderLoop",
    "SenderMetrics",
    "SmtpEmailSender",
    "TemplateError",
    "TemplateRenderer",
    "TransientDeliveryError",
    "WebhookCall",
    "WebhookSender",
    "parse_retry_after",
    "redact",
    "run_sender",
]
