"""Golden-file tests: every library journey replayed on recorded events by the simulator.

Each `golden/<name>.events.jsonl` runs through the journeys named `<name>` (all of them for
`library`), with customers in Europe/Helsinki. The timeline and the actions must equal the
reviewed files beside it, byte for byte. After a deliberate change, regenerate them with
`POLKU_UPDATE_GOLDEN=1 pytest tests/journeys/test_golden.py` and review the diff.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from journeys import (
    CustomerState,
    Engine,
    Journey,
    Outcome,
    SimulationResult,
    decode_state,
    encode_state,
    library_journeys,
    simulate,
)
from schemas import Touchpoint, encode, touchpoint_data, touchpoint_from_dict

GOLDEN = Path(__file__).parent / "golden"
SCENARIOS = sorted(p.name.removesuffix(".events.jsonl") for p in GOLDEN.glob("*.events.jsonl"))
TIMEZONE = "Europe/Helsinki"


def _events(name: str) -> list[Touchpoint]:
    lines = (GOLDEN / f"{name}.events.jsonl").read_bytes().splitlines()
    return [touchpoint_from_dict(orjson.loads(line)) for line in lines if line.strip()]


def _journeys(name: str) -> list[Journey]:
    return [j for j in library_journeys() if name in ("library", j.name)]


def _run(name: str) -> SimulationResult:
    return simulate(Engine(_journeys(name), default_timezone=TIMEZONE), _events(name))


def _check(path: Path, produced: bytes) -> None:
    if os.environ.get("POLKU_UPDATE_GOLDEN") == "1":
        path.write_bytes(produced)
    assert path.exists(), f"no golden file {path.name}: run with POLKU_UPDATE_GOLDEN=1"
    assert produced.decode() == path.read_text(), f"{path.name} differs from the simulation"


def test_every_library_journey_has_a_golden_scenario() -> None:
    names = {journey.name for journey in library_journeys()}
    assert names <= set(SCENARIOS), f"journeys without a scenario: {names - set(SCENARIOS)}"


@pytest.mark.parametrize("name", SCENARIOS)
def test_simulation_matches_the_golden_files(name: str) -> None:
    result = _run(name)
    _check(GOLDEN / f"{name}.timeline.txt", result.render_timeline().encode())
    _check(GOLDEN / f"{name}.actions.jsonl", b"".join(encode(a) + b"\n" for a in result.actions))


@pytest.mark.parametrize("name", SCENARIOS)
def test_simulation_is_deterministic(name: str) -> None:
    assert _results(_run(name)) == _results(_run(name))


class _StoringEngine(Engine):
    """Each state read back from its stored bytes before the next event, as the worker does."""

    def advance(
        self,
        state: CustomerState,
        event: Touchpoint,
        now: datetime,
        *,
        event_data: dict[str, Any] | None = None,
    ) -> Outcome:
        stored = decode_state(encode_state(state))
        return super().advance(stored, event, now, event_data=event_data)


class _WatchingEngine(Engine):
    """Fails if `advance` changes the state or the event data it was given; gives it the
    event's data made ahead, as the worker does."""

    def advance(
        self,
        state: CustomerState,
        event: Touchpoint,
        now: datetime,
        *,
        event_data: dict[str, Any] | None = None,
    ) -> Outcome:
        before, data = encode_state(state), touchpoint_data(event)
        outcome = super().advance(state, event, now, event_data=data)
        assert encode_state(state) == before, (
            f"advance changed the state it was given ({event.type})"
        )
        assert data == touchpoint_data(event), f"advance changed the event data ({event.type})"
        return outcome


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_event_data_given_ahead_acts_as_the_data_the_engine_makes(name: str) -> None:
    journeys, events = _journeys(name), _events(name)
    made = simulate(Engine(journeys, default_timezone=TIMEZONE), events)
    given = simulate(_WatchingEngine(journeys, default_timezone=TIMEZONE), events)
    assert _results(given) == _results(made)


@pytest.mark.parametrize("name", SCENARIOS)
def test_advance_never_changes_the_state_it_is_given(name: str) -> None:
    # the worker keeps states it has read or written as models (`streams/_state_cache.py`)
    result = simulate(_WatchingEngine(_journeys(name), default_timezone=TIMEZONE), _events(name))
    assert result.timeline  # every scenario makes the engine do something


@pytest.mark.parametrize("name", SCENARIOS)
def test_a_state_kept_in_memory_acts_as_the_one_read_back_from_storage(name: str) -> None:
    # the worker keeps recently used states as models instead of decoding their bytes again;
    # that is only sound if nothing a state holds changes meaning in its JSON round trip
    journeys, events = _journeys(name), _events(name)
    kept = simulate(Engine(journeys, default_timezone=TIMEZONE), events)
    stored = simulate(_StoringEngine(journeys, default_timezone=TIMEZONE), events)
    assert _results(kept) == _results(stored)


def _results(result: SimulationResult) -> tuple[str, list[bytes], dict[str, bytes]]:
    """A run's timeline, actions and states, as text and bytes."""
    actions = [encode(action) for action in result.actions]
    states = {customer: encode_state(state) for customer, state in result.states.items()}
    return result.render_timeline(), actions, states
