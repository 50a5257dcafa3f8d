"""The journey engine and library: pure, deterministic, no Kafka and no clock.

`Engine(journeys).advance(state, event, now)` returns the new customer state, the actions to
emit and the timers to schedule; the shell in `streams` does all I/O.
"""

from journeys._engine import Engine, Outcome
from journeys._errors import JourneyDefinitionError, JourneyRuntimeError
from journeys._loader import (
    Journey,
    compile_journey,
    library_journeys,
    load_journey_file,
    load_journey_text,
    load_journeys,
)
from journeys._predicates import evaluate, render, resolve
from journeys._state import CustomerState, InstanceState, Timer, Transition

__all__ = [
    "CustomerState",
    "Engine",
    "InstanceState",
    "Journey",
    "JourneyDefinitionError",
    "JourneyRuntimeError",
    "Outcome",
    "Timer",
    "Transition",
    "compile_journey",
    "evaluate",
    "library_journeys",
    "load_journey_file",
    "load_journey_text",
    "load_journeys",
    "render",
    "resolve",
]
