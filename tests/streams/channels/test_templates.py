"""Rendering: autoescaped HTML, plain text, personalisation, and clear per-action errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from journeys import ContactPolicy, library_journeys
from schemas import ContactChannel, SendStep
from streams.senders import (
    BUILT_IN_TEMPLATES,
    CHANNEL_BLOCKS,
    Contact,
    TemplateError,
    TemplateRenderer,
)
from streams.senders._templates import money, safe_url
from tests.streams.channels.builders import CART_ITEMS, make_action

RENDERER = TemplateRenderer()


def test_the_cart_reminder_names_every_product_in_both_parts() -> None:
    message = RENDERER.render(make_action(), Contact(first_name="Aino"))

    assert message["subject"] == "Aino, your cart is waiting for you"
    for part in (message["text"], message["html"]):
        assert "Hi Aino," in part
        assert "Trail shoe" in part
        assert "(size 42)" in part
        assert "Wool sock" in part
        assert "179.80" in part  # 2 x 89.90
        assert "https://shop.example/cart/c-311" in part
    assert message["html"].startswith("<!DOCTYPE html>")


def test_without_a_first_name_the_greeting_is_neutral() -> None:
    message = RENDERER.render(make_action(), Contact())
    assert message["subject"] == "Your cart is waiting for you"
    assert message["text"].startswith("Hi,\n")


@pytest.mark.parametrize("name", ["<script>alert(1)</script>", "{{ 7*7 }}", "Salt & <b>Pepper</b>"])
def test_product_names_are_text_never_markup_or_template(name: str) -> None:
    items = [{"sku": "X", "name": name, "quantity": 1}]
    action = make_action(params={"cart_id": "c", "items": items})

    message = RENDERER.render(action, Contact(first_name="<i>Aino</i>"))

    html = message["html"]
    assert name not in html or name == "{{ 7*7 }}"
    escaped = name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert escaped in html
    assert "&lt;i&gt;Aino&lt;/i&gt;" in html
    assert "49" not in html
    # plain text is not HTML: the name reads exactly as the customer typed it
    assert f"1 x {name}" in message["text"]


def test_a_non_http_cart_url_never_becomes_a_link() -> None:
    params = {"cart_id": "c-1", "items": CART_ITEMS, "cart_url": "javascript:alert(1)"}
    message = RENDERER.render(make_action(params=params), Contact())
    assert "javascript" not in message["html"]
    assert "javascript" not in message["text"]
    assert "Your cart (c-1) is saved" in message["text"]


def test_a_newline_in_params_cannot_break_the_subject_header() -> None:
    message = RENDERER.render(make_action(), Contact(first_name="Aino\nBcc: x@example.com"))
    assert "\n" not in message["subject"]


def test_the_sms_coupon_has_the_code_and_the_discount() -> None:
    action = make_action(
        channel="sms",
        template="cart_coupon",
        params={"cart_id": "c-1", "coupon_code": "CART10", "discount_percent": 10},
    )
    message = RENDERER.render(action, Contact(first_name="Aino"))
    assert message.parts == {
        "text": "Aino, your cart is still waiting: 10% off with code CART10.\n"
    }


def test_a_missing_template_is_a_per_action_error() -> None:
    action = make_action(template="back_in_stock")
    with pytest.raises(TemplateError) as raised:
        RENDERER.render(action, Contact())
    assert raised.value.kind == "template_missing"
    assert raised.value.status == "failed"
    assert "email/back_in_stock.j2" in raised.value.detail


def test_a_template_name_cannot_leave_the_folder() -> None:
    with pytest.raises(TemplateError, match="template_missing"):
        RENDERER.render(make_action(template="../../etc/passwd"), Contact())


def test_a_missing_param_fails_the_action_instead_of_sending_a_hole() -> None:
    action = make_action(channel="sms", template="cart_coupon", params={"cart_id": "c"})
    with pytest.raises(TemplateError) as raised:
        RENDERER.render(action, Contact())
    assert raised.value.kind == "template_error"
    assert "discount_percent" in raised.value.detail


def test_malformed_items_name_the_problem() -> None:
    action = make_action(params={"cart_id": "c", "items": [{"sku": "X", "quantity": 0}]})
    with pytest.raises(TemplateError) as raised:
        RENDERER.render(action, Contact())
    assert raised.value.kind == "bad_params"
    assert "items.0.name: Field required" in raised.value.detail
    assert "items.0.quantity" in raised.value.detail


def test_adding_a_template_is_adding_one_file(tmp_path: Path) -> None:
    (tmp_path / "push").mkdir()
    (tmp_path / "push" / "back_in_stock.j2").write_text(
        "{% block title %}Back in stock{% endblock %}"
        "{% block text %}{{ params.product }} is back{% endblock %}"
    )
    renderer = TemplateRenderer(tmp_path)
    action = make_action(channel="push", template="back_in_stock", params={"product": "Boot"})

    assert renderer.render(action, Contact()).parts == {
        "title": "Back in stock",
        "text": "Boot is back\n",
    }
    assert renderer.available() == {(ContactChannel.PUSH, "back_in_stock")}


def test_a_template_without_a_block_its_channel_needs_is_incomplete(tmp_path: Path) -> None:
    (tmp_path / "email").mkdir()
    (tmp_path / "email" / "thin.j2").write_text("{% block subject %}Hi{% endblock %}")
    with pytest.raises(TemplateError) as raised:
        TemplateRenderer(tmp_path).render(make_action(template="thin"), Contact())
    assert raised.value.kind == "template_incomplete"
    assert "no block 'text'" in raised.value.detail


# every param some built-in template reads (each file's header comment lists its own)
SAMPLE_PARAMS: dict[str, Any] = {
    "bought": CART_ITEMS,
    "cart_id": "c-1",
    "cart_url": "https://shop.example/c-1",
    "category": "shoes",
    "coupon_code": "CODE10",
    "currency": "EUR",
    "discount_percent": 10,
    "event_name": "Trail night",
    "event_ref": "ev-7",
    "hotel_id": "h-1",
    "items": CART_ITEMS,
    "last_viewed": "Trail shoe",
    "list_id": "news",
    "name": "Trail shoe",
    "open_cart_id": "c-2",
    "open_cart_items": CART_ITEMS,
    "order_id": "o-1",
    "rating": 5,
    "reason": "too small",
    "return_id": "r-1",
    "review_id": "rv-1",
    "score": 0.8,
    "segment": "loyal",
    "size": "42",
    "sku": "TRAIL-42",
    "source": "footer",
    "starts_at": "2026-12-01T18:00:00+02:00",
    "status": "out_for_delivery",
    "stay_id": "s-1",
    "store_id": "helsinki-1",
    "total": "192.30",
    "tracking_url": "https://track.example/o-1",
}


def test_every_built_in_template_renders() -> None:
    available = RENDERER.available()
    assert available, f"no templates under {BUILT_IN_TEMPLATES}"
    for channel, template in available:
        action = make_action(channel=channel, template=template, params=SAMPLE_PARAMS)
        rendered = RENDERER.render(action, Contact(first_name="Aino"))
        assert set(rendered.parts) == set(CHANNEL_BLOCKS[channel])
        assert all(part.strip() for part in rendered.parts.values())


def test_every_action_the_journey_library_emits_has_a_template() -> None:
    available = RENDERER.available()
    missing = sorted(
        f"{journey.name}/{step.id}: {channel.value}/{step.template}.j2"
        for journey in library_journeys()
        for step in journey.steps.values()
        if isinstance(step, SendStep)
        for channel in _channels(step)
        if (channel, step.template) not in available
    )
    assert not missing, f"add these files under {BUILT_IN_TEMPLATES}: {missing}"


def _channels(step: SendStep) -> list[ContactChannel]:
    """Where a step's action may go: `preferred` resolves to any channel a customer can have."""
    if step.channel == "preferred":
        return list(ContactPolicy().preferred_fallback)
    return [ContactChannel(step.channel)]


@pytest.mark.parametrize(
    ("value", "currency", "shown"),
    [("89.9", None, "89.90"), (12, "EUR", "12.00 EUR"), ("n/a", None, "n/a")],
)
def test_money(value: object, currency: str | None, shown: str) -> None:
    assert money(value, currency) == shown


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://shop.example/c?a=1&b=2", True),
        ("http://shop.example", True),
        ("javascript:alert(1)", False),
        ("data:text/html,hi", False),
        ("//shop.example", False),
        (None, False),
    ],
)
def test_safe_url(url: object, kept: bool) -> None:
    assert (safe_url(url) == url) is kept
