"""The producer against a real broker: validation, keying and partition agreement with Faust."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from schemas import CartAbandoned, CartPayload, CustomerRef, LineItem, SourceChannel, encode
from streams import Settings, TouchpointProducer, ensure_topics, produce_lines
from tests.integration.harness import TopicReader

pytestmark = pytest.mark.integration


def _settings(bootstrap: str, tmp_path: Path, name: str) -> Settings:
    settings = Settings(
        kafka_bootstrap=bootstrap,
        touchpoints_topic=f"{name}-{tmp_path.name}.touchpoints",
        partitions=8,
        data_dir=tmp_path,
    )
    ensure_topics(settings, [settings.touchpoints_topic])
    return settings


def _cart(customer: CustomerRef, event_id: str) -> CartAbandoned:
    return CartAbandoned(
        event_id=event_id,
        occurred_at=datetime(2026, 11, 23, tzinfo=UTC),
        channel=SourceChannel.WEB,
        customer=customer,
        payload=CartPayload(cart_id="k", items=[LineItem(sku="s", name="Shoe")]),
    )


def test_customer_keys_land_where_faust_would_put_them(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # Faust's consumer and tables place keys as aiokafka's partitioner does; channels produce
    # with confluent-kafka. Both must put one customer on one partition, or state and events
    # part ways.
    settings = _settings(kafka_bootstrap, tmp_path, "partitioner")
    producer = TouchpointProducer(settings)
    customers = [f"customer-{n}" for n in range(40)]
    for n, customer_id in enumerate(customers):
        producer.send(_cart(CustomerRef(customer_id=customer_id), f"e{n}"))
    assert producer.close() == len(customers)

    reader = TopicReader(kafka_bootstrap, [settings.touchpoints_topic])
    messages = reader.wait_for(lambda ms: len(ms) == len(customers), 20, "all events")
    reader.close()

    aiokafka_partition = DefaultPartitioner()
    partitions = list(range(settings.partitions))
    for message in messages:
        key = message.key()
        assert key is not None
        assert message.partition() == aiokafka_partition(key, partitions, partitions)
    assert len({m.partition() for m in messages}) > 1


def test_events_are_keyed_by_the_strongest_identifier(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = _settings(kafka_bootstrap, tmp_path, "keys")
    producer = TouchpointProducer(settings)
    producer.send(_cart(CustomerRef(customer_id="c1", email="a@example.com"), "e1"))
    producer.send(_cart(CustomerRef(email="b@example.com", anonymous_id="cookie"), "e2"))
    producer.close()
    reader = TopicReader(kafka_bootstrap, [settings.touchpoints_topic])
    messages = reader.wait_for(lambda ms: len(ms) == 2, 20, "two events")
    reader.close()
    assert sorted(m.key() or b"" for m in messages) == [b"c1", b"email:b@example.com"]


def test_produce_lines_reports_rejections_and_sends_the_rest(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = _settings(kafka_bootstrap, tmp_path, "lines")
    good = encode(_cart(CustomerRef(customer_id="c1"), "e1"))
    lines = [good, b"", b"{oops", orjson.dumps({"type": "cart.abandoned"}), good]

    report = produce_lines(settings, lines)

    assert report.sent == 2
    assert [number for number, _ in report.rejected] == [3, 4]
    assert report.rejected[0][1].startswith("not JSON")
    assert "event_id: Field required" in report.rejected[1][1]
    assert report.failed == []
