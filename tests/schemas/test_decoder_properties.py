"""Property-based tests: whatever bytes arrive, the decoder answers with an event or with
InvalidEventError carrying the reason and the very same bytes, never with anything else."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import EVENT_TYPES, InvalidEventError, decode_touchpoint

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what JSON encoders can write
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)


def _decode(raw: bytes) -> None:
    try:
        decode_touchpoint(raw)
    except InvalidEventError as exc:
        caught = exc
    else:
        return
    assert caught.raw == raw
    assert caught.reason
    assert str(caught) == caught.reason


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2_000))
def test_random_bytes(raw: bytes) -> None:
    _decode(raw)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(JSON)
def test_random_json(document: Any) -> None:
    _decode(orjson.dumps(document))


ENVELOPE = st.fixed_dictionaries(
    {
        "type": st.sampled_from([*EVENT_TYPES, "unknown.type", ""]),
        "event_id": st.text(max_size=300),
        "occurred_at": st.sampled_from(
            [
                "2026-03-02T10:00:00Z",
                "2026-03-02T10:00:00",
                "9999-12-31T23:59:59+14:00",
                "0001-01-01T00:00:00Z",
                "not a date",
                "2026-02-30T10:00:00Z",
            ]
        ),
        "channel": st.sampled_from(["web", "store", "carrier-pigeon"]),
        "customer": st.dictionaries(
            st.sampled_from(["customer_id", "email", "phone", "loyalty_card", "nickname"]),
            st.text(max_size=40),
            max_size=3,
        ),
        "payload": JSON,
    }
)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(ENVELOPE)
def test_envelopes_with_wrong_types_naive_times_and_unicode(document: dict[str, Any]) -> None:
    _decode(orjson.dumps(document))


def test_a_huge_payload_is_rejected_with_its_reason_not_a_crash() -> None:
    document = {
        "type": "review.posted",
        "event_id": "e1",
        "occurred_at": "2026-03-02T10:00:00Z",
        "channel": "review_site",
        "customer": {"customer_id": "c1"},
        "payload": {"review_id": "r", "rating": 5, "site": "s", "text": "x" * 2_000_000},
    }
    raw = orjson.dumps(document)
    with pytest.raises(InvalidEventError, match=r"payload\.text") as caught:
        decode_touchpoint(raw)
    assert caught.value.raw is raw


def test_integers_beyond_64_bits_are_rejected_not_crashed() -> None:
    raw = b'{"type": "cart.updated", "event_id": 99999999999999999999999999}'
    with pytest.raises(InvalidEventError) as caught:
        decode_touchpoint(raw)
    assert caught.value.raw == raw
