"""Prometheus metrics of a sender. Labels are bounded: channel, outcome, result, kind of error
(a fixed vocabulary of codes); never a customer, an address or an action id."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class SenderMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
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
