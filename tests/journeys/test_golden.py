"""Golden-file tests: every library journey replayed on recorded events by the simulator.

Each `golden/<name>.events.jsonl` runs through the journeys named `<name>` (all of them for
`library`), with customers in Europe/Helsinki. The timeline and the actions must equal the
reviewed files beside it, byte for byte. After a deliberate change, regenerate them with
`POLKU_UPDATE_GOLDEN=1 pytest tests/journeys/test_golden.py` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from journeys import Engine, SimulationResult, library_journeys, simulate
from schemas import Touchpoint, encode, touchpoint_from_dict

GOLDEN = Path(__file__).parent / "golden"
SCENARIOS = sorted(p.name.removesuffix(".events.jsonl") for p in GOLDEN.glob("*.events.jsonl"))
TIMEZONE = "Europe/Helsinki"


def _events(name: str) -> list[Touchpoint]:
    lines = (GOLDEN / f"{name}.events.jsonl").read_bytes().splitlines()
    return [touchpoint_from_dict(orjson.loads(line)) for line in lines if line.strip()]


def _run(name: str) -> SimulationResult:
    journeys = [j for j in library_journeys() if name in ("library", j.name)]
    return simulate(Engine(journeys, default_timezone=TIMEZONE), _events(name))


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
    first, second = _run(name), _run(name)
    assert first.render_timeline() == second.render_timeline()
    assert [encode(a) for a in first.actions] == [encode(a) for a in second.actions]
