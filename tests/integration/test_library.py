"""The whole journey library in one real worker, and version removal refused on restart."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from journeys import Engine, library_journeys, simulate
from schemas import Touchpoint, decode_action, touchpoint_from_dict
from streams import TouchpointProducer
from tests.integration.harness import (
    SLOW_JOURNEYS,
    TopicReader,
    WorkerProcess,
    isolated_settings,
    produce,
    wait_until_committed,
)

pytestmark = pytest.mark.integration

TIMEOUT = 60.0


def _event(
    n: int, type_: str, customer: str, payload: dict[str, Any], channel: str = "web"
) -> Touchpoint:
    return touchpoint_from_dict(
        {
            "event_id": f"lib-{n}",
            "type": type_,
            "occurred_at": datetime.now(UTC).isoformat(),
            "channel": channel,
            "customer": {"customer_id": customer},
            "payload": payload,
        }
    )


def _scenario() -> list[Touchpoint]:
    item = [{"sku": "SKU-1", "name": "Trail shoe", "quantity": 1, "unit_price": "89.90"}]
    soon = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    return [
        _event(
            1,
            "order.placed",
            "aino",
            {"order_id": "o1", "items": item, "total": "600", "currency": "EUR"},
        ),
        _event(
            2,
            "review.posted",
            "bertil",
            {"review_id": "r1", "rating": 5, "site": "shop"},
            "review_site",
        ),
        _event(
            3, "store.visited", "chen", {"store_id": "hki-1", "detected_by": "wifi_login"}, "store"
        ),
        _event(4, "return.created", "dana", {"order_id": "o9", "return_id": "rt1", "items": item}),
        _event(5, "newsletter.subscribed", "eero", {"list_id": "guide"}, "social"),
        _event(6, "churn.risk", "fanni", {"score": 0.9, "model": "churn-v3"}, "crm"),
        _event(
            7,
            "event.attended",
            "gunnar",
            {"event_ref": "fair", "name": "Fair", "starts_at": soon},
            "event",
        ),
        _event(
            8,
            "event.registered",
            "helmi",
            {"event_ref": "fair", "name": "Fair", "starts_at": soon},
            "event",
        ),
        _event(9, "cart.abandoned", "ilkka", {"cart_id": "k1", "items": item}),
        _event(10, "stock.watch", "jaana", {"sku": "SKU-1", "size": "38"}),
        _event(
            11,
            "stock.available",
            "jaana",
            {"sku": "SKU-1", "size": "38", "store_id": "hki-1"},
            "system",
        ),
    ]


def test_one_worker_runs_every_library_journey(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = isolated_settings(kafka_bootstrap, tmp_path / "data", journeys_dir=None)
    events = _scenario()
    # the engine run offline on the same events is the oracle; waits are hours or days, so
    # only what the journeys send at once can show up while the test runs
    last = max(event.occurred_at for event in events)
    expected = simulate(Engine(library_journeys()), events, until=last).actions
    assert len({a.journey for a in expected}) >= 8

    reader = TopicReader(kafka_bootstrap, list(settings.action_topics.values()))
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        produce(settings, *events)
        reader.wait_for(lambda ms: len(ms) >= len(expected), TIMEOUT, f"{len(expected)} actions")
        reader.poll(1.0)
    except BaseException:
        print(worker.log_tail())
        raise
    finally:
        reader.close()
        worker.stop()

    emitted = [decode_action(m.value() or b"") for m in reader.messages]
    assert sorted(a.action_id for a in emitted) == sorted(a.action_id for a in expected)
    for message in reader.messages:
        action = decode_action(message.value() or b"")
        assert message.topic() == settings.action_topic(action.channel)


def test_removing_a_version_that_still_has_customers_is_refused(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    with_cart = tmp_path / "v1"
    without_cart = tmp_path / "without"
    with_cart.mkdir()
    without_cart.mkdir()
    shutil.copy(SLOW_JOURNEYS / "cart_slow.yaml", with_cart)
    shutil.copy(Path(library_journeys()[0].source).parent / "returns.yaml", without_cart)
    settings = isolated_settings(kafka_bootstrap, tmp_path / "data", journeys_dir=with_cart)
    first = WorkerProcess(settings, tmp_path / "first.log").start()
    producer = TouchpointProducer(settings)
    producer.send(
        _event(
            1, "cart.abandoned", "aino", {"cart_id": "k1", "items": [{"sku": "s", "name": "Shoe"}]}
        )
    )
    producer.close()
    try:
        wait_until_committed(settings, first)
    finally:
        first.stop()

    removed = settings.model_copy(update={"journeys_dir": without_cart})
    second = WorkerProcess(removed, tmp_path / "second.log").start()
    assert second.process is not None
    try:
        code = second.process.wait(timeout=TIMEOUT)
    finally:
        second.stop()  # when it did not exit, the test fails without leaking the process
    log = second.log_tail(200)
    assert code != 0, log
    assert "refusing to run: customers are still in cart_slow v1" in log
