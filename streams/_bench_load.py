"""Synthetic touchpoints for the benchmark: a realistic mix, ~200-byte JSON, many customers.

Events are built as plain dicts and serialised with orjson: the benchmark must be able to
generate millions quickly. A unit test decodes a sample with the real schemas, so a drift
between this generator and the schemas fails the tests, not the benchmark.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson

# (type, weight): browsing dominates, as in a web shop's event stream
_MIX: tuple[tuple[str, int], ...] = (
    ("product.viewed", 40),
    ("cart.updated", 20),
    ("cart.abandoned", 8),
    ("order.placed", 10),
    ("store.visited", 8),
    ("review.posted", 5),
    ("newsletter.subscribed", 5),
    ("delivery.status", 4),
)
_PRODUCTS = (
    ("SKU-1001", "Trail running shoe", "footwear", "129.90"),
    ("SKU-2040", "Merino base layer", "apparel", "79.00"),
    ("SKU-3310", "Insulated bottle 0.75 l", "accessories", "34.50"),
    ("SKU-4477", "Hiking backpack 28 l", "bags", "149.00"),
)


@dataclass(frozen=True)
class Generated:
    key: bytes
    value: bytes
    event_id: str


def _item(rng: random.Random) -> dict[str, object]:
    sku, name, _, price = rng.choice(_PRODUCTS)
    return {"sku": sku, "name": name, "quantity": rng.randint(1, 2), "unit_price": price}


def _payload(kind: str, n: int, customer: int, rng: random.Random) -> dict[str, object]:
    sku, name, category, price = rng.choice(_PRODUCTS)
    cart = f"cart-{customer}-{n % 3}"
    payloads: dict[str, dict[str, object]] = {
        "product.viewed": {"sku": sku, "name": name, "category": category, "price": price},
        "cart.updated": {"cart_id": cart, "items": [_item(rng)], "currency": "EUR"},
        "cart.abandoned": {"cart_id": cart, "items": [_item(rng)], "total": price},
        "order.placed": {
            "order_id": f"o-{n}",
            "items": [_item(rng)],
            "total": price,
            "currency": "EUR",
            "cart_id": cart,
        },
        "store.visited": {"store_id": f"store-{customer % 40}", "detected_by": "loyalty_card"},
        "review.posted": {"review_id": f"r-{n}", "rating": rng.randint(1, 5), "site": "shop"},
        "newsletter.subscribed": {"list_id": "weekly", "source": "instagram"},
        "delivery.status": {"order_id": f"o-{n - 1}", "status": "delivered"},
    }
    return payloads[kind]


def touchpoint(
    kind: str, n: int, customer: int, at: datetime, rng: random.Random
) -> dict[str, object]:
    channel = "store" if kind == "store.visited" else rng.choice(("web", "app"))
    return {
        "event_id": f"bench-{n}",
        "type": kind,
        "occurred_at": at.isoformat(),
        "channel": channel,
        "customer": {"customer_id": f"c{customer}"},
        "payload": _payload(kind, n, customer, rng),
    }


def mixed_events(count: int, customers: int, start: datetime, seed: int = 7) -> Iterator[Generated]:
    """`count` events of the realistic mix over `customers` customers, 1 ms apart."""
    rng = random.Random(seed)
    kinds = [kind for kind, _ in _MIX]
    weights = [weight for _, weight in _MIX]
    for n in range(count):
        customer = rng.randrange(customers)
        kind = rng.choices(kinds, weights)[0]
        event = touchpoint(kind, n, customer, start + timedelta(milliseconds=n), rng)
        yield Generated(f"c{customer}".encode(), orjson.dumps(event), str(event["event_id"]))


def signups(first: int, count: int, start: datetime, prefix: str = "s") -> Iterator[Generated]:
    """One newsletter signup per new customer: the welcome journey sends at once, then waits."""
    rng = random.Random(first)
    for n in range(first, first + count):
        event = touchpoint("newsletter.subscribed", n, n, start, rng)
        event["event_id"] = f"{prefix}-{n}"
        event["customer"] = {"customer_id": f"{prefix}{n}"}
        yield Generated(f"{prefix}{n}".encode(), orjson.dumps(event), str(event["event_id"]))


def registrations(
    first: int, count: int, start: datetime, reminder_due: datetime
) -> Iterator[Generated]:
    """Event registrations whose reminder (two days before the start) is due at `reminder_due`."""
    starts_at = (reminder_due + timedelta(days=2)).isoformat()
    for n in range(first, first + count):
        event = {
            "event_id": f"reg-{n}",
            "type": "event.registered",
            "occurred_at": start.isoformat(),
            "channel": "web",
            "customer": {"customer_id": f"r{n}"},
            "payload": {"event_ref": "fair-2027", "name": "Outdoor fair", "starts_at": starts_at},
        }
        yield Generated(f"r{n}".encode(), orjson.dumps(event), f"reg-{n}")
