"""Create polku's topics with their final partition counts (Tansu cannot add partitions later)."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streams._errors import BrokerError
from streams._settings import Settings

_ADMIN_TIMEOUT_SECONDS = 15.0


def run_scoped(run: str) -> dict[str, str]:
    """Settings that give one run (a demo, a benchmark, a test) an app id and topics of its own."""
    return {
        "app_id": run,
        "touchpoints_topic": f"{run}.touchpoints",
        "customer_topic": f"{run}.touchpoints.by-customer",
        "identity_topic": f"{run}.identity",
        "dead_letter_topic": f"{run}.deadletter",
        "suppressed_topic": f"{run}.suppressed",
        "actions_topic_prefix": f"{run}.actions.",
    }


def polku_topics(settings: Settings) -> list[str]:
    return [
        settings.touchpoints_topic,
        settings.customer_topic,
        settings.identity_topic,
        settings.dead_letter_topic,
        settings.suppressed_topic,
        *settings.action_topics.values(),
    ]


def ensure_topics(settings: Settings, topics: Iterable[str] | None = None) -> None:
    """Create missing topics with `settings.partitions`; fail on an existing one with fewer."""
    wanted = list(topics) if topics is not None else polku_topics(settings)
    admin = AdminClient(settings.kafka_client_config())
    existing = admin.list_topics(timeout=_ADMIN_TIMEOUT_SECONDS).topics
    missing = [name for name in wanted if name not in existing]
    if missing:
        futures = admin.create_topics(
            [NewTopic(name, settings.partitions, settings.replication_factor) for name in missing],
            operation_timeout=_ADMIN_TIMEOUT_SECONDS,
        )
        for name, future in futures.items():
            try:
                future.result(timeout=_ADMIN_TIMEOUT_SECONDS)
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise BrokerError(f"cannot create topic {name!r}: {exc}") from exc
    _check_partitions(settings, admin, wanted)


def _check_partitions(settings: Settings, admin: AdminClient, topics: list[str]) -> None:
    # the tables are co-partitioned with the touchpoint topics: a count other than the
    # configured one would route a customer's events away from that customer's state
    co_partitioned = (settings.touchpoints_topic, settings.customer_topic, settings.identity_topic)
    keyed = [t for t in co_partitioned if t in topics]
    if not keyed:
        return
    metadata = admin.list_topics(timeout=_ADMIN_TIMEOUT_SECONDS).topics
    for topic in keyed:
        found = len(metadata[topic].partitions)
        if found != settings.partitions:
            raise BrokerError(
                f"topic {topic!r} has {found} partitions but POLKU_PARTITIONS is "
                f"{settings.partitions}; they must match"
            )
