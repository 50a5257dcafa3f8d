"""The worker's use of the cyclic garbage collector (`streams._gc`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streams import Settings
from streams._gc import collection_paused, tune_garbage_collector


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    thresholds, enabled = gc.get_threshold(), gc.isenabled()
    yield
    gc.set_threshold(*thresholds)
    (gc.enable if enabled else gc.disable)()


def test_the_thresholds_are_the_settings() -> None:
    tune_garbage_collector(Settings(gc_thresholds=(12_345, 6, 7)))
    assert gc.get_threshold() == (12_345, 6, 7)


def test_no_automatic_collection_runs_inside_the_block_and_it_resumes_after() -> None:
    gc.enable()
    with collection_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_collection_resumes_after_an_error_in_the_block() -> None:
    gc.enable()
    with pytest.raises(ValueError, match="batch failed"), collection_paused():
        raise ValueError("batch failed")
    assert gc.isenabled()


def test_a_collector_disabled_before_stays_disabled() -> None:
    gc.disable()
    with collection_paused():
        pass
    assert not gc.isenabled()


def test_no_collection_runs_in_the_block_however_much_it_allocates() -> None:
    gc.enable()
    gc.set_threshold(100, 10, 10)
    started: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(info["generation"])

    gc.callbacks.append(count)
    try:
        with collection_paused():
            # containers: what the collector counts
            held: list[list[int]] = [[] for _ in range(10_000)]
            assert started == []
        more: list[list[int]] = [[] for _ in range(1_000)]
        assert started, "allocating after the block starts collections again"
    finally:
        gc.callbacks.remove(count)
    assert len(held) + len(more) == 11_000
