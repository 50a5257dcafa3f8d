"""`StateCache`: a kept state is used only while the table holds the bytes it was made from."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from journeys import CustomerState, encode_state
from streams._state_cache import StateCache


def state(customer: str, **profile: str) -> CustomerState:
    return CustomerState(customer_id=customer, profile=dict(profile))


def test_a_state_kept_with_its_bytes_is_served_for_those_bytes() -> None:
    cache = StateCache(10)
    kept = state("aino", tier="gold")
    cache.put(b"aino", encode_state(kept), kept)
    # the table's bytes are a new object with the same content, as a database read gives
    assert cache.get(b"aino", bytes(bytearray(encode_state(kept)))) is kept


def test_a_state_is_not_served_once_the_table_holds_other_bytes() -> None:
    cache = StateCache(10)
    kept = state("aino", tier="gold")
    cache.put(b"aino", encode_state(kept), kept)
    # restored from the changelog, written by another worker, or a batch discarded
    assert cache.get(b"aino", encode_state(state("aino", tier="silver"))) is None
    assert cache.get(b"eero", encode_state(kept)) is None


def test_the_least_recently_used_state_goes_first() -> None:
    cache = StateCache(2)
    states = {name: state(name) for name in ("a", "b", "c")}
    cache.put(b"a", encode_state(states["a"]), states["a"])
    cache.put(b"b", encode_state(states["b"]), states["b"])
    assert cache.get(b"a", encode_state(states["a"])) is states["a"]  # a is now the most recent
    cache.put(b"c", encode_state(states["c"]), states["c"])
    assert len(cache) == 2
    assert cache.get(b"b", encode_state(states["b"])) is None
    assert cache.get(b"a", encode_state(states["a"])) is states["a"]
    assert cache.get(b"c", encode_state(states["c"])) is states["c"]


def test_capacity_zero_keeps_nothing_and_a_dropped_state_is_gone() -> None:
    nothing = StateCache(0)
    kept = state("aino")
    nothing.put(b"aino", encode_state(kept), kept)
    assert nothing.get(b"aino", encode_state(kept)) is None

    cache = StateCache(10)
    cache.put(b"aino", encode_state(kept), kept)
    cache.drop(b"aino")
    assert cache.get(b"aino", encode_state(kept)) is None


def test_decoded_serves_the_kept_state_or_decodes_the_bytes_and_keeps_that() -> None:
    cache = StateCache(10)
    kept = state("aino", tier="gold")
    cache.put(b"aino", encode_state(kept), kept)
    assert cache.decoded(b"aino", encode_state(kept)) is kept

    restored = encode_state(state("aino", tier="silver"))  # the table holds other bytes now
    decoded = cache.decoded(b"aino", restored)
    assert decoded == state("aino", tier="silver")
    assert cache.get(b"aino", restored) is decoded


@pytest.fixture
def _collector_off() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    yield
    (gc.enable if enabled else gc.disable)()


@pytest.mark.usefixtures("_collector_off")
def test_keeping_a_state_gives_the_cyclic_collector_nothing_new_to_walk() -> None:
    # in a stream of new customers every kept state is young: whatever a kept entry adds for
    # the collector to track is walked by its next collection, which stops the worker meanwhile
    states = [state(f"c{n}") for n in range(1_000)]
    stored = [encode_state(kept) for kept in states]
    keys = [kept.customer_id.encode() for kept in states]
    cache = StateCache(500)
    tracked_before = len(gc.get_objects())
    for key, data, kept in zip(keys, stored, states, strict=True):
        cache.put(key, data, kept)
    assert len(gc.get_objects()) - tracked_before < 10
    assert cache.get(b"c999", stored[999]) is states[999]
