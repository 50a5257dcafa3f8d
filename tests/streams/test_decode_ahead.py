"""A batch's touchpoints decoded ahead: each step takes exactly what decoding it then gives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from schemas import InvalidEventError, decode_touchpoint, encode, touchpoint_data
from streams._decode_ahead import DecodedAhead
from tests.streams.test_batches import cart


@dataclass
class Record:
    value: bytes | None
    topic: str = "polku.touchpoints"
    partition: int = 0
    offset: int = 0


def cart_record(customer: str) -> Any:
    return Record(encode(cart(customer, 1)))


def test_a_record_decoded_ahead_is_taken_as_decoding_it_gives() -> None:
    aino, eero = cart_record("aino"), cart_record("eero")
    decoded = DecodedAhead()
    decoded.decode([aino, eero])

    assert decoded.take(eero) == decode_touchpoint(eero.value)
    assert decoded.take(aino) == decode_touchpoint(aino.value)


def test_a_record_that_is_no_touchpoint_is_refused_when_taken_with_its_reason() -> None:
    broken: Any = Record(b'{"type": "cart.abandoned"}')
    empty: Any = Record(None)
    with pytest.raises(InvalidEventError) as now:
        decode_touchpoint(b'{"type": "cart.abandoned"}')
    decoded = DecodedAhead()
    decoded.decode([broken])

    with pytest.raises(InvalidEventError) as ahead:
        decoded.take(broken)
    assert ahead.value.reason == now.value.reason
    assert ahead.value.raw == broken.value
    with pytest.raises(InvalidEventError, match="not JSON"):
        decoded.take(empty)  # not decoded ahead: decoded now, and refused alike


def test_records_at_one_position_each_take_their_own() -> None:
    # a position (topic, partition, offset) is no key: these two share one
    aino, eero = cart_record("aino"), cart_record("eero")
    decoded = DecodedAhead()
    decoded.decode([aino, eero])

    assert decoded.take(aino).customer.customer_id == "aino"
    assert decoded.take(eero).customer.customer_id == "eero"


def test_a_record_not_decoded_ahead_or_taken_twice_is_decoded_again() -> None:
    aino, eero = cart_record("aino"), cart_record("eero")
    decoded = DecodedAhead()
    decoded.decode([aino])

    assert decoded.take(eero) == decode_touchpoint(eero.value)
    first = decoded.take(aino)
    assert decoded.take(aino) == first
    assert decoded.take(aino) is not first  # nothing kept once taken


def test_the_next_batch_or_forget_drops_what_was_not_taken() -> None:
    aino, eero = cart_record("aino"), cart_record("eero")
    decoded = DecodedAhead()
    decoded.decode([aino])
    decoded.decode([eero])
    assert decoded._results.keys() == {id(eero)}
    decoded.forget()
    assert decoded._results == {}


def test_a_touchpoint_decoded_ahead_comes_with_its_data_once() -> None:
    aino, eero = cart_record("aino"), cart_record("eero")
    decoded = DecodedAhead()
    decoded.decode([aino])
    event = decoded.take(aino)

    assert decoded.data_of(event) == touchpoint_data(event)
    assert decoded.data_of(event) is None  # handed out once
    assert decoded.data_of(decoded.take(eero)) is None  # not decoded ahead: no data


def test_the_data_is_only_ever_its_own_touchpoints() -> None:
    aino = cart_record("aino")
    decoded = DecodedAhead()
    decoded.decode([aino])
    twin = decode_touchpoint(aino.value)  # equal, but not the touchpoint decoded ahead

    assert decoded.data_of(twin) is None
    decoded.forget()
    assert decoded.data_of(decoded.take(aino)) is None
