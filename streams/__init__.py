"""The streaming shell: Faust worker, durable timers, broker, producer and CLI."""

from streams._errors import BrokerError, ConfigError
from streams._metrics import WorkerMetrics
from streams._producer import ProduceReport, TouchpointProducer, produce_lines
from streams._settings import Settings
from streams._timers import DueTimeIndex
from streams._topics import ensure_topics, polku_topics
from streams.broker import LocalBroker, broker_bootstrap, free_port, tansu_binary

__all__ = [
    "BrokerError",
    "ConfigError",
    "DueTimeIndex",
    "LocalBroker",
    "ProduceReport",
    "Settings",
    "TouchpointProducer",
    "WorkerMetrics",
    "broker_bootstrap",
    "ensure_topics",
    "free_port",
    "polku_topics",
    "produce_lines",
    "tansu_binary",
]
