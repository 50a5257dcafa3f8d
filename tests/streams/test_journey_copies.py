"""The demo and test journeys are the library's abandoned-cart journey with shorter waits only."""

from __future__ import annotations

from pathlib import Path

import pytest

from journeys import Journey, library_journeys, load_journey_file
from schemas import WaitStep

REPO_ROOT = Path(__file__).resolve().parents[2]
COPIES = [
    REPO_ROOT / "streams" / "demo" / "abandoned_cart.yaml",
    REPO_ROOT / "tests" / "fixtures" / "journeys" / "cart_fast.yaml",
    REPO_ROOT / "tests" / "fixtures" / "journeys_slow" / "cart_slow.yaml",
]


def _without_waits_and_name(journey: Journey) -> dict[str, object]:
    data = journey.definition.model_dump(exclude={"name", "schema_ref"})
    for step in data["steps"]:
        if step["type"] == "wait":
            step.pop("duration")
    return data


@pytest.mark.parametrize("path", COPIES, ids=lambda p: p.name)
def test_copy_differs_from_the_library_journey_only_in_waits(path: Path) -> None:
    [library] = [j for j in library_journeys() if (j.name, j.version) == ("abandoned_cart", 1)]
    copy = load_journey_file(path)
    assert _without_waits_and_name(copy) == _without_waits_and_name(library)
    waits = [s.duration for s in copy.steps.values() if isinstance(s, WaitStep)]
    assert all(duration is not None and duration.total_seconds() <= 10 for duration in waits)
