"""Prometheus metrics of a worker. Labels are bounded (journey, step, channel, event type, kind
of problem); a customer identifier is never a label."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        reg = self.registry
        self.events = Counter(
            "polku_events_total", "Touchpoint events processed, by type", ["type"], registry=reg
        )
        self.dead_lettered = Counter(
            "polku_events_dead_lettered_total",
            "Events sent to the dead-letter topic, by kind of problem",
            ["reason"],
            registry=reg,
        )
        self.rekeyed = Counter(
            "polku_events_rekeyed_total",
            "Events that arrived under another key and were re-produced keyed by customer",
            registry=reg,
        )
        self.actions = Counter(
            "polku_actions_emitted_total",
            "Actions produced to a channel topic",
            ["journey", "step", "channel"],
            registry=reg,
        )
        self.transitions = Counter(
            "polku_journey_transitions_total",
            "Journey instances entering, stepping, exiting and completing",
            ["journey", "kind"],
            registry=reg,
        )
        self.timers_pending = Gauge(
            "polku_timers_pending", "Durable timers waiting in this worker", registry=reg
        )
        self.timers_fired = Counter(
            "polku_timers_fired_total", "Timers fired as timer.fired events", registry=reg
        )
        self.timer_lag = Histogram(
            "polku_timer_firing_lag_seconds",
            "How late a timer fired relative to its due time",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=reg,
        )
        self.processing = Histogram(
            "polku_event_processing_seconds",
            "Time to process one event, including waiting for its actions to be acked",
            registry=reg,
        )
