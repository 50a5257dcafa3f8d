"""Shared builders for the channel tests (unit and integration)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import Action, ContactChannel, stable_id

CART_ITEMS: list[dict[str, Any]] = [
    {"sku": "TRAIL-42", "name": "Trail shoe", "quantity": 2, "unit_price": "89.90", "size": "42"},
    {"sku": "SOCK-1", "name": "Wool sock", "quantity": 1, "unit_price": "12.50"},
]


def make_action(
    *,
    channel: ContactChannel | str = ContactChannel.EMAIL,
    template: str = "cart_reminder",
    params: dict[str, Any] | None = None,
    customer_id: str = "aino",
    seed: str = "1",
    not_before: datetime | None = None,
) -> Action:
    # created a minute ago, due at once unless `not_before` says otherwise
    created = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    return Action(
        action_id=stable_id("test-action", seed, customer_id, template),
        customer_id=customer_id,
        journey="abandoned_cart",
        journey_version=1,
        instance_id=stable_id("instance", seed),
        step_id="email_reminder",
        channel=ContactChannel(channel),
        template=template,
        params=(
            params
            if params is not None
            else {
                "cart_id": "c-311",
                "items": CART_ITEMS,
                "cart_url": "https://shop.example/cart/c-311",
            }
        ),
        triggered_by=f"ev-{seed}",
        created_at=created,
        not_before=not_before or created,
    )
