"""Prometheus metrics of a sender. Labels are bounded: channel, outcome, result, kind of error
(a fixed vocabulary of codes); never a customer, an address or an action id.

Every series of the dashboards and alerts exists at zero from the start (`declare`): a counter
that first appears at 1 is invisible to `rate` and `increase`, so the first failure, retry,
dead letter or duplicate would never show on the Senders dashboard.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

from schemas import ContactChannel

OUTCOMES = ("sent", "delivered", "bounced", "failed")  # the receipt statuses
RESULTS = ("ok", "transient", "permanent")
# polku.error.kind of the dead letters the loop and the reference senders write (README)
DEAD_LETTER_KINDS = (
    "template_missing",
    "template_incomplete",
    "template_error",
    "bad_params",
    "no_contact",
    "retries_exhausted",
    "invalid_action",
    "wrong_channel",
)
EMAIL_DEAD_LETTER_KINDS = ("smtp_rejected",)
WEBHOOK_DEAD_LETTER_KINDS = ("webhook_rejected",)


class SenderMetrics:
    """One sender process's metrics. `channels` are declared at zero at once; the default is
    every channel, since a sender serves one that only its caller knows: pass it to export the
    served channel's series alone."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        channels: Iterable[ContactChannel | str] = tuple(ContactChannel),
    ) -> None:
        self.registry = registry or CollectorRegistry()
        reg = self.registry
        self.outcomes = Counter(
            "polku_sender_outcomes_total",
            "Actions finished, by receipt status (sent, delivered, bounced, failed)",
            ["channel", "outcome"],
            registry=reg,
        )
        self.duplicates = Counter(
            "polku_sender_duplicates_total",
            "Redelivered actions skipped because their outcome was already recorded",
            ["channel"],
            registry=reg,
        )
        self.attempts = Counter(
            "polku_sender_attempts_total",
            "Delivery attempts, by result (ok, transient, permanent)",
            ["channel", "result"],
            registry=reg,
        )
        self.retries = Counter(
            "polku_sender_retries_total",
            "Delivery attempts scheduled again after a transient failure",
            ["channel"],
            registry=reg,
        )
        self.dead_lettered = Counter(
            "polku_sender_dead_lettered_total",
            "Actions sent to the dead-letter topic, by kind of problem",
            ["channel", "kind"],
            registry=reg,
        )
        self.deferred = Counter(
            "polku_sender_deferred_total",
            "Times a partition was paused because its next action's not_before is ahead",
            ["channel"],
            registry=reg,
        )
        self.delivery_seconds = Histogram(
            "polku_sender_delivery_seconds",
            "Time of one delivery attempt (SMTP transaction, webhook call)",
            ["channel"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=reg,
        )
        for channel in channels:
            self.declare(channel)

    def declare(self, channel: ContactChannel | str) -> None:
        """Create every series of `channel` at zero (see the module docstring)."""
        name = ContactChannel(channel).value
        for outcome in OUTCOMES:
            self.outcomes.labels(name, outcome)
        for result in RESULTS:
            self.attempts.labels(name, result)
        own_kinds = (
            EMAIL_DEAD_LETTER_KINDS if name == ContactChannel.EMAIL else WEBHOOK_DEAD_LETTER_KINDS
        )
        for kind in DEAD_LETTER_KINDS + own_kinds:
            self.dead_lettered.labels(name, kind)
        self.duplicates.labels(name)
        self.retries.labels(name)
        self.deferred.labels(name)
        self.delivery_seconds.labels(name)
