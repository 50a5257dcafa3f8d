"""Actions: deterministic ids (senders dedupe on them) and a validated shape."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from itertools import combinations
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from schemas import Action, ContactChannel, action_id_for, decode_action, encode, stable_id

AT = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)

PARTS: dict[str, Any] = {
    "journey": "abandoned_cart",
    "journey_version": 1,
    "customer_id": "cust-1",
    "instance_id": "inst-1",
    "step_id": "email_reminder",
    "triggered_by": "ev-1",
}

# Computed once from PARTS; if this changes, every sender's dedupe memory is invalidated, so a
# change of the algorithm must be deliberate (and must come with a migration note).
EXPECTED_ID = "dfe3577e9e4c6b1aeb61f6e9092c5d10"

CHANGED: dict[str, Any] = {
    "journey": "welcome",
    "journey_version": 2,
    "customer_id": "cust-2",
    "instance_id": "inst-2",
    "step_id": "sms_coupon",
    "triggered_by": "ev-2",
}


def action_id(**overrides: Any) -> str:
    parts = PARTS | overrides
    return action_id_for(
        journey=parts["journey"],
        journey_version=parts["journey_version"],
        customer_id=parts["customer_id"],
        instance_id=parts["instance_id"],
        step_id=parts["step_id"],
        triggered_by=parts["triggered_by"],
    )


def action_fields(**overrides: Any) -> dict[str, Any]:
    return {
        "action_id": EXPECTED_ID,
        "customer_id": "cust-1",
        "journey": "abandoned_cart",
        "journey_version": 1,
        "instance_id": "inst-1",
        "step_id": "email_reminder",
        "channel": "email",
        "template": "cart_reminder",
        "params": {"items": [{"sku": "SKU-1", "unit_price": "59.90"}], "cart_id": "cart-1"},
        "triggered_by": "ev-1",
        "created_at": AT,
        "not_before": AT,
    } | overrides


def test_action_id_is_a_known_constant_for_known_inputs() -> None:
    assert action_id() == EXPECTED_ID


def test_action_id_is_stable_across_calls() -> None:
    assert action_id() == action_id()
    assert re.fullmatch(r"[0-9a-f]{32}", action_id())


@pytest.mark.parametrize("part", sorted(CHANGED))
def test_action_id_changes_when_any_single_part_changes(part: str) -> None:
    assert action_id(**{part: CHANGED[part]}) != EXPECTED_ID


def test_action_ids_of_all_single_part_changes_are_distinct() -> None:
    ids = [action_id(**{part: value}) for part, value in CHANGED.items()]
    assert len(set(ids)) == len(ids)


TEXT_PARTS = sorted(part for part, value in PARTS.items() if isinstance(value, str))


@pytest.mark.parametrize(("first", "second"), list(combinations(TEXT_PARTS, 2)))
def test_swapping_two_parts_changes_the_action_id(first: str, second: str) -> None:
    assert action_id(**{first: PARTS[second], second: PARTS[first]}) != EXPECTED_ID


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (("ab", "c"), ("a", "bc")),
        (("a", ""), ("", "a")),
        (("1:a", "b"), ("1", "a", "b")),
        (("a", "1:b"), ("a1", "b")),
        (("", ""), ("",)),
        (("abc",), ("ab", "c")),
        (("10:abcdefghij",), ("10", "abcdefghij")),
    ],
)
def test_stable_id_does_not_collide_when_parts_are_joined_differently(
    left: tuple[str, ...], right: tuple[str, ...]
) -> None:
    assert stable_id(*left) != stable_id(*right)


def test_stable_id_counts_characters_not_bytes_without_colliding() -> None:
    # "ä" is two bytes in UTF-8; the length prefix still keeps these tuples apart
    assert stable_id("ä", "b") != stable_id("äb")
    assert stable_id("äa", "b") != stable_id("ä", "ab")


def test_action_id_does_not_collide_across_part_boundaries() -> None:
    assert action_id(journey="ab", journey_version=1, customer_id="c") != action_id(
        journey="a", journey_version=1, customer_id="bc"
    )
    assert action_id(step_id="email", triggered_by="_reminder-ev") != action_id(
        step_id="email_reminder", triggered_by="-ev"
    )
    assert action_id(journey_version=11, customer_id="cust") != action_id(
        journey_version=1, customer_id="1cust"
    )


def test_a_valid_action_round_trips() -> None:
    action = Action.model_validate(action_fields())
    assert action.channel is ContactChannel.EMAIL
    assert action.priority == 50
    assert decode_action(encode(action)) == action


@pytest.mark.parametrize(
    "value",
    [
        0.1,
        -0.0,
        1e16,
        1e-7,
        1.2345678901234568e20,
        5e-324,
        2**63 - 1,
        "Åland é 😀 </script> \u2028 \x7f",
        '\t\n\r\b\f\x00\x1f \\ "',
        [True, None, {"nested": 12.5}],
    ],
)
def test_encode_writes_the_bytes_orjson_writes_of_the_json_dump(value: Any) -> None:
    """`encode` lets pydantic-core write the JSON: stored states, action ids and the records
    senders read must stay byte-identical to what `orjson.dumps(model_dump(mode="json"))` wrote."""
    action = Action.model_validate(action_fields(params={"value": value, "none": None}))
    dumped = action.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert encode(action) == orjson.dumps(dumped)


@pytest.mark.parametrize(
    "bad_id",
    [
        "",
        "dfe3577e9e4c6b1aeb61f6e9092c5d1",  # 31 digits
        "dfe3577e9e4c6b1aeb61f6e9092c5d100",  # 33 digits
        "DFE3577E9E4C6B1AEB61F6E9092C5D10",  # upper case
        "gfe3577e9e4c6b1aeb61f6e9092c5d10",  # not hex
        "dfe3577e-9e4c-6b1a-eb61-f6e9092c5d10",  # a UUID's shape
        " dfe3577e9e4c6b1aeb61f6e9092c5d10",
        "dfe3577e9e4c6b1aeb61f6e9092c5d10\n",
    ],
)
def test_action_rejects_a_malformed_id(bad_id: str) -> None:
    with pytest.raises(ValidationError, match="action_id"):
        Action.model_validate(action_fields(action_id=bad_id))


def test_action_accepts_every_stable_id() -> None:
    for parts in [(), ("x",), ("a", "b", "c")]:
        assert Action.model_validate(action_fields(action_id=stable_id(*parts)))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("channel", "carrier_pigeon"),
        ("priority", 101),
        ("priority", -1),
        ("journey_version", 0),
        ("created_at", datetime(2025, 3, 14, 9, 0)),
        ("unexpected", "field"),
    ],
)
def test_action_rejects_bad_fields(field: str, value: Any) -> None:
    with pytest.raises(ValidationError, match=field):
        Action.model_validate(action_fields(**{field: value}))


def test_actions_are_immutable() -> None:
    action = Action.model_validate(action_fields())
    with pytest.raises(ValidationError):
        action.template = "other"  # type: ignore[misc]
