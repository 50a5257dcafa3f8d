"""The journey engine and library: pure, deterministic, no Kafka and no clock.

`Engine(journeys).advance(state, event, now)` returns the new customer state, the actions to
emit and the timers to schedule; the shell in `streams` does all I/O.
"""

from journeys._calendar import bucket, next_time_of_day
from journeys._diagram import to_dot, to_mermaid
from journeys._engine import Engine, Outcome
from journeys._errors import JourneyDefinitionError, JourneyRuntimeError
from journeys._loader import (
    Journey,
    compile_journey,
    is_wait,
    library_journeys,
    load_journey_file,
    load_journey_text,
    load_journeys,
    successors,
)
from journeys._merge import merge_states
from journeys._policy import (
    ContactPolicy,
    ContactState,
    FrequencyCap,
    PendingSend,
    QuietHours,
    quiet_until,
)
from journeys._predicates import evaluate, render, resolve
from journeys._run import seen_key
from journeys._simulate import SimulationResult, TimelineEntry, simulate
from journeys._state import (
    CustomerState,
    InstanceState,
    SentAction,
    StoredTimer,
    Timer,
    Transition,
    decode_state,
    document_timers,
    encode_state,
    pending_timers,
    state_timer,
    stored_state_timers,
)

__all__ = [
    "ContactPolicy",
    "ContactState",
    "CustomerState",
    "Engine",
    "FrequencyCap",
    "InstanceState",
    "Journey",
    "JourneyDefinitionError",
    "JourneyRuntimeError",
    "Outcome",
    "PendingSend",
    "QuietHours",
    "SentAction",
    "SimulationResult",
    "StoredTimer",
    "TimelineEntry",
    "Timer",
    "Transition",
    "bucket",
    "compile_journey",
    "decode_state",
    "document_timers",
    "encode_state",
    "evaluate",
    "is_wait",
    "library_journeys",
    "load_journey_file",
    "load_journey_text",
    "load_journeys",
    "merge_states",
    "next_time_of_day",
    "pending_timers",
    "quiet_until",
    "render",
    "resolve",
    "seen_key",
    "simulate",
    "state_timer",
    "stored_state_timers",
    "successors",
    "to_dot",
    "to_mermaid",
]
