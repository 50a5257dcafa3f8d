"""The pure core's cost per event, offline: decode, load the state, advance, encode the state.

No broker and no worker: the engine is the one `polku worker` builds in the benchmark (the
journey library, the demo contact policy, the settings' time zone), the B1 mix is run through
it against a plain dict of encoded states, and each phase is timed.
`python -m streams._bench_engine` prints the figures.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from journeys import CustomerState, Engine, decode_state, encode_state
from schemas import decode_touchpoint
from streams._bench_load import mixed_events
from streams._cli_journeys import worker_engine
from streams._settings import Settings

LIBRARY = Path(__file__).resolve().parents[1] / "journeys" / "library"
BENCH_POLICY = Path(__file__).resolve().parent / "policies" / "demo.yaml"
# fixed, so that a run is a pure function of its arguments
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PHASES = ("decode", "load", "advance", "encode")


def bench_engine(settings: Settings) -> Engine:
    """The engine a `polku bench` worker runs (`bench_settings`: the library, the demo policy)."""
    return worker_engine(
        settings.model_copy(update={"journeys_dir": LIBRARY, "contact_policy_file": BENCH_POLICY})
    )


def engine_rate(
    settings: Settings, events: int = 10_000, customers: int = 2_500
) -> dict[str, float]:
    """Events per second and µs per event (in all, and per phase) over the B1 mix."""
    engine = bench_engine(settings)
    records = list(mixed_events(events, customers, NOW))
    states: dict[bytes, bytes] = {}
    spent = dict.fromkeys(PHASES, 0.0)
    processed = 0
    clock = time.perf_counter
    for record in records:
        t0 = clock()
        event = decode_touchpoint(record.value)
        t1 = clock()
        stored = states.get(record.key)
        if stored is None:
            state = CustomerState(customer_id=record.key.decode())
        else:
            state = decode_state(stored)
        t2 = clock()
        outcome = engine.advance(state, event, NOW)
        t3 = clock()
        states[record.key] = encode_state(outcome.state)
        t4 = clock()
        spent["decode"] += t1 - t0
        spent["load"] += t2 - t1
        spent["advance"] += t3 - t2
        spent["encode"] += t4 - t3
        processed += 1
    total = sum(spent.values())
    figures = {"events": float(processed), "events_per_second": processed / total}
    figures["us_per_event"] = total / processed * 1e6
    figures |= {f"{phase}_us": spent[phase] / processed * 1e6 for phase in PHASES}
    return figures


def main() -> None:
    for name, value in engine_rate(Settings()).items():
        print(f"{name:<18} {value:>12,.1f}")


if __name__ == "__main__":
    main()
