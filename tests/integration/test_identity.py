"""Identity on the real broker: anonymous, logged-in and in-store touchpoints of one person meet."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from schemas import Action, Touchpoint, decode_action, touchpoint_from_dict
from streams import Settings
from tests.integration.harness import (
    SLOW_JOURNEYS,
    TopicReader,
    WorkerProcess,
    isolated_settings,
    produce,
)

pytestmark = pytest.mark.integration

TIMEOUT = 60.0
ITEMS = [{"sku": "TRAIL-42", "name": "Trail shoe"}]
_serial = iter(range(1, 1_000_000))


def event(
    type_: str, customer: dict[str, str], payload: dict[str, Any], channel: str = "web"
) -> Touchpoint:
    return touchpoint_from_dict(
        {
            "event_id": f"id-{next(_serial)}",
            "type": type_,
            "occurred_at": datetime.now(UTC).isoformat(),
            "channel": channel,
            "customer": customer,
            "payload": payload,
        }
    )


def cart(customer: dict[str, str], cart_id: str) -> Touchpoint:
    return event("cart.abandoned", customer, {"cart_id": cart_id, "items": ITEMS})


def emails(reader: TopicReader) -> list[Action]:
    return [decode_action(m.value() or b"") for m in reader.messages]


class Running:
    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.settings = settings
        self.email = TopicReader(settings.require_bootstrap(), [settings.action_topic("email")])
        self.worker = WorkerProcess(settings, tmp_path / "worker.log").start()

    def wait_for_email_to(self, customer: str) -> list[Action]:
        self.email.wait_for(
            lambda ms: any(decode_action(m.value() or b"").customer_id == customer for m in ms),
            TIMEOUT,
            f"an email to {customer}",
        )
        self.email.poll(1.5)
        return emails(self.email)


@pytest.fixture
def running(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Running]:
    # 8 s waits: time for the linking events to be resolved before any reminder is due
    run = Running(isolated_settings(kafka_bootstrap, tmp_path / "data", SLOW_JOURNEYS), tmp_path)
    try:
        produce(run.settings, cart({"customer_id": "warm-up"}, "k0"))
        run.wait_for_email_to("warm-up")  # the worker is up and running
        yield run
    except BaseException:
        print(run.worker.log_tail())
        raise
    finally:
        run.email.close()
        run.worker.stop()


def test_anonymous_cart_then_login_then_loyalty_card_store_purchase_ends_the_journey(
    running: Running,
) -> None:
    produce(
        running.settings,
        cart({"anonymous_id": "cookie-a"}, "k-anon"),
        # she logs in: the web shop now knows the cookie belongs to customer aino
        event(
            "cart.updated",
            {"customer_id": "aino", "anonymous_id": "cookie-a"},
            {"cart_id": "k-anon", "items": ITEMS},
        ),
        # at the till she shows her loyalty card, which the POS knows to be aino's
        event(
            "store.visited",
            {"customer_id": "aino", "loyalty_card": "LC-1"},
            {"store_id": "hki-1", "detected_by": "loyalty_card"},
            "store",
        ),
    )
    time.sleep(1.0)
    produce(
        running.settings,
        # the purchase carries the loyalty card only
        event(
            "order.placed",
            {"loyalty_card": "LC-1"},
            {"order_id": "o-1", "items": ITEMS, "total": "89.90", "currency": "EUR"},
            "store",
        ),
        cart({"anonymous_id": "cookie-sentinel"}, "k-sentinel"),
    )
    sent = running.wait_for_email_to("anonymous_id:cookie-sentinel")
    assert [a for a in sent if a.customer_id in {"aino", "anonymous_id:cookie-a"}] == []


def test_two_profiles_with_pending_timers_merge_and_the_reminder_goes_out_once(
    running: Running,
) -> None:
    produce(
        running.settings,
        cart({"anonymous_id": "cookie-b"}, "k-b1"),
        cart({"customer_id": "bertil"}, "k-b2"),
        event(
            "cart.updated",
            {"customer_id": "bertil", "anonymous_id": "cookie-b"},
            {"cart_id": "k-b2", "items": ITEMS},
        ),
    )
    sent = running.wait_for_email_to("bertil")
    mine = [a for a in sent if a.customer_id in {"bertil", "anonymous_id:cookie-b"}]
    assert [(a.customer_id, a.template) for a in mine] == [("bertil", "cart_reminder")]
    assert mine[0].params["cart_id"] == "k-b1", "the earlier cart's instance survives the merge"


def test_erasure_forgets_the_customer_and_unlinks_their_aliases(running: Running) -> None:
    produce(
        running.settings,
        event(
            "cart.updated",
            {"customer_id": "chen", "anonymous_id": "cookie-c"},
            {"cart_id": "k-c0", "items": ITEMS},
        ),
        cart({"customer_id": "chen"}, "k-c1"),
        event("customer.erased", {"customer_id": "chen"}, {"reference": "gdpr-1"}, "crm"),
    )
    time.sleep(1.0)
    # the cookie is no longer chen's: a new cart by it is a stranger's, sent to the cookie
    produce(running.settings, cart({"anonymous_id": "cookie-c"}, "k-c2"))
    sent = running.wait_for_email_to("anonymous_id:cookie-c")
    assert [a for a in sent if a.customer_id == "chen"] == []


def test_emails_and_phone_numbers_stay_out_of_the_worker_log_and_metrics(
    running: Running,
) -> None:
    email, phone = "aino.private@example.com", "+358401112233"
    produce(
        running.settings,
        # known by e-mail only: the e-mail is this profile's key until she logs in
        cart({"email": email}, "k-p1"),
        event(
            "cart.updated",
            {"customer_id": "pii-aino", "email": email, "phone": phone},
            {"cart_id": "k-p1", "items": ITEMS},
        ),
    )
    # a malformed event carrying both: dead-lettered, and its reason is logged
    broken = orjson.dumps({"type": "cart.abandoned", "customer": {"email": email, "phone": phone}})
    producer = Producer(running.settings.kafka_client_config())
    producer.produce(running.settings.touchpoints_topic, key=email.encode(), value=broken)
    assert producer.flush(10) == 0
    running.wait_for_email_to("pii-aino")

    metrics = running.worker.metrics()
    assert "polku_events_dead_lettered_total" in metrics
    log = running.worker.log_path.read_text(errors="replace")
    assert "dead-lettered" in log  # the bad event was logged, yet without its data
    for secret in (email, phone, phone.removeprefix("+")):
        assert secret not in log
        assert secret not in metrics
