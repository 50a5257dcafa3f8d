"""The streaming shell: Faust worker, durable timers, broker, producer, HTTP collector and CLI.

The sender SDK and the reference senders are in `streams.senders`.
"""

from streams._collector import (
    Collector,
    CollectorMetrics,
    KafkaPublisher,
    TouchpointPublisher,
    build_collector_app,
    run_collector,
)
from streams._collector_openapi import openapi_document
from streams._errors import BrokerError, ConfigError
from streams._metrics import WorkerMetrics
from streams._producer import ProduceReport, TouchpointProducer, produce_lines
from streams._settings import Settings
from streams._timers import DueTimeIndex
from streams._topics import ensure_topics, polku_topics
from streams.broker import LocalBroker, broker_bootstrap, free_port, tansu_binary

__all__ = [
    "BrokerError",
    "Collector",
    "CollectorMetrics",
    "ConfigError",
    "DueTimeIndex",
    "KafkaPublisher",
    "LocalBroker",
    "ProduceReport",
    "Settings",
    "TouchpointProducer",
    "TouchpointPublisher",
    "WorkerMetrics",
    "broker_bootstrap",
    "build_collector_app",
    "ensure_topics",
    "free_port",
    "openapi_document",
    "polku_topics",
    "produce_lines",
    "run_collector",
    "tansu_binary",
]
