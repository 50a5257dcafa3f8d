"""Touchpoint events: what channels tell polku about a customer.

Every event shares one envelope (id, type, time, channel, customer identifiers) and carries a
payload whose shape depends on `type`; `Touchpoint` is the discriminated union of all of them.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict

_STRICT = ConfigDict(extra="forbid", frozen=True)

Identifier = Annotated[str, Field(min_length=1, max_length=256)]


class SourceChannel(StrEnum):
    """Where a touchpoint happened."""

    WEB = "web"
    APP = "app"
    STORE = "store"
    CRM = "crm"
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    CUSTOMER_SERVICE = "customer_service"
    SOCIAL = "social"
    REVIEW_SITE = "review_site"
    DELIVERY = "delivery"
    EVENT = "event"
    SYSTEM = "system"


class CustomerRef(BaseModel):
    """Every identifier an event may carry; at least one is required."""

    model_config = _STRICT

    customer_id: Identifier | None = None
    email: (
        Annotated[str, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")] | None
    ) = None
    phone: Annotated[str, Field(pattern=r"^\+[1-9][0-9]{6,14}$")] | None = None
    loyalty_card: Identifier | None = None
    device_id: Identifier | None = None
    anonymous_id: Identifier | None = None

    @model_validator(mode="after")
    def _at_least_one_identifier(self) -> CustomerRef:
        if not any(self.__dict__.values()):  # the fields' values, without a dump per event
            raise ValueError("customer needs at least one identifier")
        return self

    @property
    def keys(self) -> list[str]:
        """Every identifier as a key, strongest first: the customer id as it is, the others
        prefixed with their kind (`email:aino@example.com`), so kinds never collide."""
        order = ("customer_id", "loyalty_card", "email", "phone", "device_id", "anonymous_id")
        return [
            str(value) if name == "customer_id" else f"{name}:{value}"
            for name in order
            if (value := getattr(self, name))
        ]

    @property
    def key(self) -> str:
        """The identifier that keys this customer's events: the strongest one."""
        return self.keys[0]


class LineItem(BaseModel):
    model_config = _STRICT

    sku: Identifier
    name: Annotated[str, Field(min_length=1, max_length=500)]
    quantity: Annotated[int, Field(ge=1)] = 1
    unit_price: Annotated[Decimal, Field(ge=0)] | None = None
    size: str | None = None


class _Payload(BaseModel):
    model_config = _STRICT


class CartPayload(_Payload):
    cart_id: Identifier
    items: list[LineItem]
    total: Annotated[Decimal, Field(ge=0)] | None = None
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None
    cart_url: str | None = None


class ProductViewedPayload(_Payload):
    sku: Identifier
    name: str | None = None
    category: str | None = None
    price: Annotated[Decimal, Field(ge=0)] | None = None


class OrderPlacedPayload(_Payload):
    order_id: Identifier
    items: list[LineItem]
    total: Annotated[Decimal, Field(ge=0)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    cart_id: Identifier | None = None
    store_id: Identifier | None = None


class StoreVisitPayload(_Payload):
    store_id: Identifier
    detected_by: Literal["wifi_login", "app_geofence", "loyalty_card", "staff", "qr_code"]


DeliveryStage = Literal[
    "processing", "shipped", "out_for_delivery", "ready_for_pickup", "delivered", "failed"
]


class DeliveryStatusPayload(_Payload):
    order_id: Identifier
    status: DeliveryStage
    carrier: str | None = None
    tracking_url: str | None = None


class ReturnPayload(_Payload):
    order_id: Identifier
    return_id: Identifier
    items: list[LineItem]
    reason: str | None = None


class ReviewPayload(_Payload):
    review_id: Identifier
    rating: Annotated[int, Field(ge=1, le=5)]
    site: str
    sku: Identifier | None = None
    text: Annotated[str, Field(max_length=10_000)] | None = None


class NewsletterPayload(_Payload):
    list_id: Identifier
    source: str | None = None


class StockWatchPayload(_Payload):
    sku: Identifier
    size: str | None = None
    name: str | None = None


class StockAvailablePayload(_Payload):
    sku: Identifier
    size: str | None = None
    name: str | None = None
    store_id: Identifier | None = None
    quantity: Annotated[int, Field(ge=0)] | None = None


class HotelStayPayload(_Payload):
    stay_id: Identifier
    hotel_id: Identifier
    check_in: AwareDatetime
    check_out: AwareDatetime
    nights: Annotated[int, Field(ge=0)] | None = None


class EventTicketPayload(_Payload):
    event_ref: Identifier
    name: str
    starts_at: AwareDatetime
    venue: str | None = None


class ChurnRiskPayload(_Payload):
    score: Annotated[float, Field(ge=0, le=1)]
    model: str
    segment: str | None = None


class ContactChannel(StrEnum):
    """Where polku can reach a customer; one action topic per channel."""

    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    OFFER = "offer"
    STAFF_TASK = "staff_task"
    WEBHOOK = "webhook"


Purpose = Literal["marketing", "transactional"]


class ConsentPayload(_Payload):
    channel: ContactChannel
    purpose: Purpose
    granted: bool


class ErasurePayload(_Payload):
    """GDPR right to be forgotten; `reference` points at the request in the CRM, if any."""

    reference: str | None = None


class ReceiptPayload(_Payload):
    action_id: Identifier
    channel: ContactChannel
    status: Literal["sent", "delivered", "bounced", "opened", "clicked", "failed", "unsubscribed"]
    detail: str | None = None


class TimerPayload(_Payload):
    timer_id: Identifier
    journey: Identifier
    journey_version: Annotated[int, Field(ge=1)]
    instance_id: Identifier
    step_id: Identifier
    due_at: AwareDatetime


def _require_type(schema: JsonDict) -> None:
    """`type` has a default for Python callers, but on the wire it is the discriminator: plain
    JSON Schema validators ignore `discriminator`, so each variant must require it itself."""
    required = schema.setdefault("required", [])
    assert isinstance(required, list)
    if "type" not in required:
        required.append("type")


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_require_type)

    event_id: Identifier
    occurred_at: AwareDatetime
    channel: SourceChannel
    customer: CustomerRef


class CartUpdated(_Envelope):
    type: Literal["cart.updated"] = "cart.updated"
    payload: CartPayload


class CartAbandoned(_Envelope):
    type: Literal["cart.abandoned"] = "cart.abandoned"
    payload: CartPayload


class ProductViewed(_Envelope):
    type: Literal["product.viewed"] = "product.viewed"
    payload: ProductViewedPayload


class OrderPlaced(_Envelope):
    """An order in any channel; `channel` tells web, app or store."""

    type: Literal["order.placed"] = "order.placed"
    payload: OrderPlacedPayload


class StoreVisited(_Envelope):
    type: Literal["store.visited"] = "store.visited"
    payload: StoreVisitPayload


class DeliveryStatusChanged(_Envelope):
    type: Literal["delivery.status"] = "delivery.status"
    payload: DeliveryStatusPayload


class ReturnCreated(_Envelope):
    type: Literal["return.created"] = "return.created"
    payload: ReturnPayload


class ReviewPosted(_Envelope):
    type: Literal["review.posted"] = "review.posted"
    payload: ReviewPayload


class NewsletterSubscribed(_Envelope):
    type: Literal["newsletter.subscribed"] = "newsletter.subscribed"
    payload: NewsletterPayload


class ConsentChanged(_Envelope):
    type: Literal["consent.changed"] = "consent.changed"
    payload: ConsentPayload


class MessageReceipt(_Envelope):
    type: Literal["message.receipt"] = "message.receipt"
    payload: ReceiptPayload


class StockWatchRequested(_Envelope):
    """The customer asked to be told when a product (in a size) is back in stock."""

    type: Literal["stock.watch"] = "stock.watch"
    payload: StockWatchPayload


class StockAvailable(_Envelope):
    """A watched product is available again, told to polku once per watching customer."""

    type: Literal["stock.available"] = "stock.available"
    payload: StockAvailablePayload


class HotelCheckedOut(_Envelope):
    type: Literal["hotel.checked_out"] = "hotel.checked_out"
    payload: HotelStayPayload


class EventRegistered(_Envelope):
    """A ticket to an event, fair or webinar."""

    type: Literal["event.registered"] = "event.registered"
    payload: EventTicketPayload


class EventAttended(_Envelope):
    type: Literal["event.attended"] = "event.attended"
    payload: EventTicketPayload


class ChurnRiskSignalled(_Envelope):
    """A model (CRM, data science) flags the customer as likely to leave."""

    type: Literal["churn.risk"] = "churn.risk"
    payload: ChurnRiskPayload


class CustomerErased(_Envelope):
    """Forget the customer: state, timers and identity links go; nothing is sent afterwards."""

    type: Literal["customer.erased"] = "customer.erased"
    payload: ErasurePayload


class TimerFired(_Envelope):
    """Produced by polku itself when a journey's wait is over."""

    type: Literal["timer.fired"] = "timer.fired"
    payload: TimerPayload


Touchpoint = Annotated[
    CartUpdated
    | CartAbandoned
    | ProductViewed
    | OrderPlaced
    | StoreVisited
    | DeliveryStatusChanged
    | ReturnCreated
    | ReviewPosted
    | NewsletterSubscribed
    | ConsentChanged
    | MessageReceipt
    | StockWatchRequested
    | StockAvailable
    | HotelCheckedOut
    | EventRegistered
    | EventAttended
    | ChurnRiskSignalled
    | CustomerErased
    | TimerFired,
    Field(discriminator="type"),
]

EVENT_TYPES: tuple[str, ...] = tuple(
    get_args(model.model_fields["type"].annotation)[0]
    for model in get_args(get_args(Touchpoint)[0])
)
