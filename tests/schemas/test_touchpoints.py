"""Touchpoint events: the wire codec round-trips every type and rejects bad input with a reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from schemas import (
    EVENT_TYPES,
    CartAbandoned,
    CartPayload,
    CartUpdated,
    ChurnRiskPayload,
    ChurnRiskSignalled,
    ConsentChanged,
    ConsentPayload,
    ContactChannel,
    CustomerErased,
    CustomerRef,
    DeliveryStatusChanged,
    DeliveryStatusPayload,
    ErasurePayload,
    EventAttended,
    EventRegistered,
    EventTicketPayload,
    HotelCheckedOut,
    HotelStayPayload,
    InvalidEventError,
    LineItem,
    MessageReceipt,
    NewsletterPayload,
    NewsletterSubscribed,
    OrderPlaced,
    OrderPlacedPayload,
    ProductViewed,
    ProductViewedPayload,
    ReceiptPayload,
    ReturnCreated,
    ReturnPayload,
    ReviewPayload,
    ReviewPosted,
    SourceChannel,
    StockAvailable,
    StockAvailablePayload,
    StockWatchPayload,
    StockWatchRequested,
    StoreVisited,
    StoreVisitPayload,
    TimerFired,
    TimerPayload,
    Touchpoint,
    decode_touchpoint,
    encode,
    touchpoint_data,
    touchpoint_from_dict,
)

AT = datetime(2025, 3, 14, 9, 26, 53, 589000, tzinfo=UTC)
HELSINKI = timezone(timedelta(hours=2))
CUSTOMER = CustomerRef(customer_id="cust-1", email="anna@example.com", phone="+358401234567")
ITEMS = [
    LineItem(sku="SKU-1", name="Wool sweater", quantity=2, unit_price=Decimal("59.90"), size="M"),
    LineItem(sku="SKU-2", name="Scarf"),
]


def examples() -> list[Touchpoint]:
    """One valid event of every type, with optional fields filled in where there are any."""
    return [
        CartUpdated(
            event_id="ev-cart-updated",
            occurred_at=AT,
            channel=SourceChannel.WEB,
            customer=CustomerRef(anonymous_id="anon-7"),
            payload=CartPayload(cart_id="cart-1", items=ITEMS),
        ),
        CartAbandoned(
            event_id="ev-cart-abandoned",
            occurred_at=AT,
            channel=SourceChannel.APP,
            customer=CUSTOMER,
            payload=CartPayload(
                cart_id="cart-1",
                items=ITEMS,
                total=Decimal("119.80"),
                currency="EUR",
                cart_url="https://shop.example/cart/cart-1",
            ),
        ),
        ProductViewed(
            event_id="ev-product-viewed",
            occurred_at=datetime(2025, 3, 14, 11, 0, tzinfo=HELSINKI),
            channel=SourceChannel.WEB,
            customer=CustomerRef(device_id="dev-1"),
            payload=ProductViewedPayload(
                sku="SKU-1", name="Wool sweater", category="knitwear", price=Decimal("59.90")
            ),
        ),
        OrderPlaced(
            event_id="ev-order-placed",
            occurred_at=AT,
            channel=SourceChannel.STORE,
            customer=CustomerRef(loyalty_card="LC-1234"),
            payload=OrderPlacedPayload(
                order_id="order-1",
                items=ITEMS,
                total=Decimal("119.80"),
                currency="EUR",
                cart_id="cart-1",
                store_id="store-hki-1",
            ),
        ),
        StoreVisited(
            event_id="ev-store-visited",
            occurred_at=AT,
            channel=SourceChannel.STORE,
            customer=CustomerRef(phone="+358401234567"),
            payload=StoreVisitPayload(store_id="store-hki-1", detected_by="wifi_login"),
        ),
        DeliveryStatusChanged(
            event_id="ev-delivery",
            occurred_at=AT,
            channel=SourceChannel.DELIVERY,
            customer=CUSTOMER,
            payload=DeliveryStatusPayload(
                order_id="order-1",
                status="out_for_delivery",
                carrier="posti",
                tracking_url="https://track.example/1",
            ),
        ),
        ReturnCreated(
            event_id="ev-return",
            occurred_at=AT,
            channel=SourceChannel.CUSTOMER_SERVICE,
            customer=CUSTOMER,
            payload=ReturnPayload(
                order_id="order-1", return_id="ret-1", items=ITEMS[:1], reason="too small"
            ),
        ),
        ReviewPosted(
            event_id="ev-review",
            occurred_at=AT,
            channel=SourceChannel.REVIEW_SITE,
            customer=CustomerRef(email="anna@example.com"),
            payload=ReviewPayload(
                review_id="rev-1", rating=5, site="trustpilot", sku="SKU-1", text="Lovely & warm"
            ),
        ),
        NewsletterSubscribed(
            event_id="ev-newsletter",
            occurred_at=AT,
            channel=SourceChannel.WEB,
            customer=CustomerRef(email="anna@example.com"),
            payload=NewsletterPayload(list_id="weekly", source="footer"),
        ),
        ConsentChanged(
            event_id="ev-consent",
            occurred_at=AT,
            channel=SourceChannel.CRM,
            customer=CUSTOMER,
            payload=ConsentPayload(channel=ContactChannel.SMS, purpose="marketing", granted=False),
        ),
        MessageReceipt(
            event_id="ev-receipt",
            occurred_at=AT,
            channel=SourceChannel.EMAIL,
            customer=CUSTOMER,
            payload=ReceiptPayload(
                action_id="0123456789abcdef0123456789abcdef",
                channel=ContactChannel.EMAIL,
                status="bounced",
                detail="mailbox full",
            ),
        ),
        StockWatchRequested(
            event_id="ev-watch",
            occurred_at=AT,
            channel=SourceChannel.WEB,
            customer=CUSTOMER,
            payload=StockWatchPayload(sku="SKU-1", size="M", name="Sweater"),
        ),
        StockAvailable(
            event_id="ev-stock",
            occurred_at=AT,
            channel=SourceChannel.SYSTEM,
            customer=CUSTOMER,
            payload=StockAvailablePayload(sku="SKU-1", size="M", store_id="hki-1", quantity=3),
        ),
        HotelCheckedOut(
            event_id="ev-checkout",
            occurred_at=AT,
            channel=SourceChannel.CRM,
            customer=CUSTOMER,
            payload=HotelStayPayload(
                stay_id="stay-1",
                hotel_id="hotel-1",
                check_in=AT - timedelta(days=2),
                check_out=AT,
                nights=2,
            ),
        ),
        EventRegistered(
            event_id="ev-registered",
            occurred_at=AT,
            channel=SourceChannel.EVENT,
            customer=CUSTOMER,
            payload=EventTicketPayload(
                event_ref="fair-2025", name="Outdoor fair", starts_at=AT + timedelta(days=30)
            ),
        ),
        EventAttended(
            event_id="ev-attended",
            occurred_at=AT,
            channel=SourceChannel.EVENT,
            customer=CUSTOMER,
            payload=EventTicketPayload(
                event_ref="fair-2025", name="Outdoor fair", starts_at=AT, venue="Messukeskus"
            ),
        ),
        ChurnRiskSignalled(
            event_id="ev-churn",
            occurred_at=AT,
            channel=SourceChannel.CRM,
            customer=CUSTOMER,
            payload=ChurnRiskPayload(score=0.87, model="churn-v3", segment="gold"),
        ),
        CustomerErased(
            event_id="ev-erased",
            occurred_at=AT,
            channel=SourceChannel.CRM,
            customer=CUSTOMER,
            payload=ErasurePayload(reference="gdpr-2025-17"),
        ),
        TimerFired(
            event_id="ev-timer",
            occurred_at=AT,
            channel=SourceChannel.SYSTEM,
            customer=CustomerRef(customer_id="cust-1"),
            payload=TimerPayload(
                timer_id="timer-1",
                journey="abandoned_cart",
                journey_version=1,
                instance_id="inst-1",
                step_id="wait_before_reminder",
                due_at=AT + timedelta(hours=1),
            ),
        ),
    ]


def valid_document() -> dict[str, Any]:
    """A valid cart.abandoned as a JSON document, to be broken one field at a time."""
    return {
        "event_id": "ev-1",
        "type": "cart.abandoned",
        "occurred_at": "2025-03-14T09:26:53Z",
        "channel": "web",
        "customer": {"customer_id": "cust-1", "phone": "+358401234567"},
        "payload": {"cart_id": "cart-1", "items": [{"sku": "SKU-1", "name": "Sweater"}]},
    }


def reject(raw: bytes) -> InvalidEventError:
    with pytest.raises(InvalidEventError) as caught:
        decode_touchpoint(raw)
    assert caught.value.raw == raw
    assert str(caught.value) == caught.value.reason
    return caught.value


def test_there_is_one_example_of_every_event_type() -> None:
    types = [event.type for event in examples()]
    assert sorted(types) == sorted(EVENT_TYPES)
    assert len(set(EVENT_TYPES)) == len(EVENT_TYPES)


@pytest.mark.parametrize("event", examples(), ids=lambda event: event.type)
def test_every_event_type_round_trips_through_the_codec(event: Touchpoint) -> None:
    raw = encode(event)
    decoded = decode_touchpoint(raw)
    assert type(decoded) is type(event)
    assert decoded == event
    assert encode(decoded) == raw


@pytest.mark.parametrize("event", examples(), ids=lambda event: event.type)
def test_encoded_events_carry_their_type_and_omit_absent_fields(event: Touchpoint) -> None:
    document = orjson.loads(encode(event))
    assert document["type"] == event.type
    assert None not in document["customer"].values()


@pytest.mark.parametrize("event", examples(), ids=lambda event: event.type)
def test_an_events_data_is_its_json_without_absent_fields(event: Touchpoint) -> None:
    data = touchpoint_data(event)
    assert data == event.model_dump(mode="json", exclude_none=True)
    assert data == orjson.loads(encode(event))  # the same as on the wire


def test_decimals_travel_as_exact_strings() -> None:
    event = examples()[1]
    document = orjson.loads(encode(event))
    assert document["payload"]["total"] == "119.80"
    assert document["payload"]["items"][0]["unit_price"] == "59.90"
    decoded = decode_touchpoint(encode(event))
    assert isinstance(decoded, CartAbandoned)
    assert decoded.payload.total == Decimal("119.80")


def test_decoding_a_valid_document() -> None:
    raw = orjson.dumps(valid_document())
    event = decode_touchpoint(raw)
    assert isinstance(event, CartAbandoned)
    assert event.occurred_at == datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)
    assert event.payload.items[0].quantity == 1
    assert touchpoint_from_dict(valid_document()) == event


def test_occurred_at_keeps_its_offset() -> None:
    document = valid_document() | {"occurred_at": "2025-03-14T11:26:53+02:00"}
    event = decode_touchpoint(orjson.dumps(document))
    assert event.occurred_at.utcoffset() == timedelta(hours=2)
    assert event.occurred_at == datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)


def test_a_naive_occurred_at_is_rejected() -> None:
    document = valid_document() | {"occurred_at": "2025-03-14T09:26:53"}
    error = reject(orjson.dumps(document))
    assert "occurred_at" in error.reason
    assert "timezone" in error.reason


def test_a_naive_datetime_cannot_build_a_model() -> None:
    with pytest.raises(ValidationError, match="occurred_at"):
        CartAbandoned(
            event_id="ev-1",
            occurred_at=datetime(2025, 3, 14, 9, 26, 53),
            channel=SourceChannel.WEB,
            customer=CUSTOMER,
            payload=CartPayload(cart_id="cart-1", items=ITEMS),
        )


def test_an_unknown_type_is_rejected() -> None:
    error = reject(orjson.dumps(valid_document() | {"type": "cart.exploded"}))
    assert "type" in error.reason
    assert "cart.exploded" in error.reason


def test_a_missing_type_is_rejected() -> None:
    document = valid_document()
    del document["type"]
    error = reject(orjson.dumps(document))
    assert "type" in error.reason


def test_an_unknown_envelope_field_is_rejected() -> None:
    error = reject(orjson.dumps(valid_document() | {"shoe_size": 42}))
    assert "shoe_size" in error.reason
    assert "Extra inputs are not permitted" in error.reason


def test_an_unknown_payload_field_is_rejected() -> None:
    document = valid_document()
    document["payload"]["coupon"] = "FREE"
    error = reject(orjson.dumps(document))
    assert "payload.coupon" in error.reason


def test_an_unknown_customer_field_is_rejected() -> None:
    document = valid_document()
    document["customer"]["ssn"] = "010101-123A"
    error = reject(orjson.dumps(document))
    assert "customer.ssn" in error.reason


@pytest.mark.parametrize(
    "customer",
    [{}, {"customer_id": None}, {"customer_id": None, "email": None, "anonymous_id": None}],
)
def test_a_customer_without_identifiers_is_rejected(customer: dict[str, Any]) -> None:
    error = reject(orjson.dumps(valid_document() | {"customer": customer}))
    assert "customer" in error.reason
    assert "identifier" in error.reason


def test_an_empty_identifier_is_rejected() -> None:
    error = reject(orjson.dumps(valid_document() | {"customer": {"customer_id": ""}}))
    assert "customer.customer_id" in error.reason


@pytest.mark.parametrize("phone", ["0401234567", "+0401234567", "+358 40 123", "+12345", "phone"])
def test_a_bad_phone_is_rejected(phone: str) -> None:
    error = reject(orjson.dumps(valid_document() | {"customer": {"phone": phone}}))
    assert "customer.phone" in error.reason


def test_a_bad_email_is_rejected() -> None:
    error = reject(orjson.dumps(valid_document() | {"customer": {"email": "not an email"}}))
    assert "customer.email" in error.reason


def test_the_reason_does_not_echo_the_input() -> None:
    phone = "+0999999999999"
    error = reject(orjson.dumps(valid_document() | {"customer": {"phone": phone}}))
    assert phone not in error.reason


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"not json", b"\xff\xfe\x00", b'{"event_id": "ev-1",}', b"NaN"],
)
def test_bytes_that_are_not_json_are_rejected(raw: bytes) -> None:
    error = reject(raw)
    assert error.reason.startswith("not JSON")


@pytest.mark.parametrize("raw", [b"[]", b'"cart.abandoned"', b"42", b"null"])
def test_json_that_is_not_an_object_is_rejected(raw: bytes) -> None:
    reject(raw)


def test_a_wrong_payload_for_the_type_is_rejected() -> None:
    document = valid_document() | {"type": "order.placed"}
    error = reject(orjson.dumps(document))
    assert "order.placed.payload" in error.reason


def test_the_invalid_event_error_names_every_problem() -> None:
    document = valid_document() | {"channel": "carrier_pigeon", "occurred_at": "yesterday"}
    error = reject(orjson.dumps(document))
    assert "channel" in error.reason
    assert "occurred_at" in error.reason


@pytest.mark.parametrize(
    ("identifiers", "key"),
    [
        (
            {
                "customer_id": "cust-1",
                "loyalty_card": "LC-1",
                "email": "a@example.com",
                "phone": "+358401234567",
                "device_id": "dev-1",
                "anonymous_id": "anon-1",
            },
            "cust-1",
        ),
        (
            {
                "loyalty_card": "LC-1",
                "email": "a@example.com",
                "phone": "+358401234567",
                "device_id": "dev-1",
                "anonymous_id": "anon-1",
            },
            "loyalty_card:LC-1",
        ),
        (
            {
                "email": "a@example.com",
                "phone": "+358401234567",
                "device_id": "dev-1",
                "anonymous_id": "anon-1",
            },
            "email:a@example.com",
        ),
        (
            {"phone": "+358401234567", "device_id": "dev-1", "anonymous_id": "anon-1"},
            "phone:+358401234567",
        ),
        ({"device_id": "dev-1", "anonymous_id": "anon-1"}, "device_id:dev-1"),
        ({"anonymous_id": "anon-1"}, "anonymous_id:anon-1"),
    ],
)
def test_customer_key_takes_the_strongest_identifier(identifiers: dict[str, str], key: str) -> None:
    assert CustomerRef.model_validate(identifiers).key == key


def test_a_customer_id_and_an_alias_with_the_same_text_have_different_keys() -> None:
    assert CustomerRef(anonymous_id="cust-1").key != CustomerRef(customer_id="cust-1").key


def test_events_are_immutable() -> None:
    event = examples()[0]
    with pytest.raises(ValidationError):
        event.event_id = "other"  # type: ignore[misc]
