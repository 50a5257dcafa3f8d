"""Where B1's gap lies: the B1 records through less than a worker, on the same broker.

B1 sets a whole `polku worker` against a raw aiokafka passthrough. This runs the same mix of
records through three loops in one process, none of them Faust, each in a consumer group of
its own over the same records, and prints each one's events/s against the passthrough's:

- `passthrough`: B1's baseline itself (aiokafka consume -> orjson parse -> aiokafka produce).
- `state, no journeys`: what a worker does per event whatever its journeys are: the record
  parsed, the customer's state read from RocksDB and written back, the state's changelog
  record and one output record produced with librdkafka (as the worker produces). A floor
  under any worker that keeps a state table: no journey logic at all.
- `pure core, no Faust`: the whole pure core on top of that: the touchpoint validated, the
  state decoded (kept decoded between a customer's events, as the worker's `StateCache` keeps
  it), `Engine.advance` with the journey library and the demo policy, the new state encoded,
  written and sent to the changelog, each action sent.

Each loop waits for its records' acks before it commits and fetches again, as the passthrough
and the worker do, and runs with the worker's collector settings. The core loop also times
each step of its handler (`CORE_PHASES`). `python -m streams._bench_floor` prints the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer
from confluent_kafka import Producer
from rocksdict import Options, Rdict

from journeys import CustomerState, Engine, encode_state
from schemas import decode_touchpoint, encode
from streams._bench import BenchError, bench_settings, produce, raw_passthrough_rate
from streams._bench_engine import bench_engine
from streams._bench_load import mixed_events
from streams._gc import collection_paused, tune_garbage_collector
from streams._kafka_security import aiokafka_security_kwargs
from streams._settings import Settings
from streams._state_cache import StateCache
from streams._topics import ensure_topics
from streams.broker import broker_bootstrap

LOOPS = ("passthrough", "state, no journeys", "pure core, no Faust")
# what the core loop's handler does per event, in order, each timed (`LoopRun.phases`)
CORE_PHASES = (
    "touchpoint decoded",
    "state read (RocksDB)",
    "state decoded or kept",
    "advance",
    "state encoded",
    "state written (RocksDB, cache)",
    "actions encoded",
)
# the stored state of `state, no journeys`: the size of a B1 customer's state midway
_FLOOR_STATE = b"x" * 2_400
_FETCH_RECORDS = 10_000

# one record: (key, value) -> the records to produce, (topic, key, value)
Handler = Callable[[bytes, bytes], list[tuple[str, bytes, bytes]]]


def _state_only(db: Rdict, changelog: str, output: str) -> Handler:
    def handle(key: bytes, value: bytes) -> list[tuple[str, bytes, bytes]]:
        document = orjson.loads(value)
        db.get(key)
        db[key] = _FLOOR_STATE
        return [(changelog, key, _FLOOR_STATE), (output, key, orjson.dumps(document))]

    return handle


def _pure_core(
    db: Rdict,
    changelog: str,
    output: str,
    engine: Engine,
    now: datetime,
    customers: int,
    spent: dict[str, float],
) -> Handler:
    """The core loop's handler; it adds the seconds each of `CORE_PHASES` took to `spent`."""
    decoded = StateCache(customers)
    clock = time.perf_counter

    def handle(key: bytes, value: bytes) -> list[tuple[str, bytes, bytes]]:
        started = clock()
        event = decode_touchpoint(value)
        decoded_at = clock()
        stored = db.get(key)
        read_at = clock()
        state = (
            CustomerState(customer_id=key.decode())
            if stored is None
            else decoded.decoded(key, stored)
        )
        loaded_at = clock()
        outcome = engine.advance(state, event, now)
        advanced_at = clock()
        after = encode_state(outcome.state)
        encoded_at = clock()
        db[key] = after
        decoded.put(key, after, outcome.state)
        written_at = clock()
        records = [(changelog, key, after)] + [(output, key, encode(a)) for a in outcome.actions]
        marks = (started, decoded_at, read_at, loaded_at, advanced_at, encoded_at, written_at)
        for phase, (start, end) in zip(CORE_PHASES, pairwise((*marks, clock())), strict=True):
            spent[phase] += end - start
        return records

    return handle


@dataclass(frozen=True)
class LoopRun:
    """One loop over the records: its events/s, how many records it produced (acked), and for
    the core loop the µs per event its handler spent in each of `CORE_PHASES`."""

    rate: float
    produced: int
    phases: dict[str, float] = field(default_factory=dict)


async def _run_loop(settings: Settings, handle: Handler, total: int, limit: float) -> LoopRun:
    """`handle` over the first `total` records of the touchpoint topic."""
    consumer = AIOKafkaConsumer(
        settings.touchpoints_topic,
        bootstrap_servers=settings.require_bootstrap(),
        **aiokafka_security_kwargs(settings),
        group_id=f"bench-floor-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = Producer(
        settings.kafka_client_config()
        | {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": settings.producer_linger_seconds * 1000,
        }
    )
    loop = asyncio.get_running_loop()
    await consumer.start()
    try:
        seen, produced, started, deadline = 0, 0, 0.0, time.monotonic() + limit
        while seen < total and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000, max_records=_FETCH_RECORDS)
            if batches and not started:
                started = time.monotonic()
            # as the worker's agent runs a batch: no cyclic collection over the kept states
            with collection_paused():
                for records in batches.values():
                    for record in records:
                        for topic, key, value in handle(record.key or b"", record.value or b""):
                            producer.produce(topic, value, key)
                            produced += 1
                        producer.poll(0)
                    seen += len(records)
            left = await loop.run_in_executor(None, producer.flush, limit)
            if left:
                raise BenchError(f"{left} records not acked in {limit:.0f} s")
            await consumer.commit()
        if seen < total:
            raise BenchError(f"{seen} of {total} records read in {limit:.0f} s")
        return LoopRun(total / max(time.monotonic() - started, 1e-9), produced)
    finally:
        await consumer.stop()


def floor_rates(
    settings: Settings, events: int, customers: int, rounds: int, timeout: float
) -> dict[str, list[LoopRun]]:
    """Each loop of `LOOPS`, `rounds` times, interleaved, over one set of records."""
    changelog, output = f"{settings.app_id}.floor-changelog", f"{settings.app_id}.floor-out"
    ensure_topics(settings, [settings.touchpoints_topic, changelog, output])
    now = datetime.now(UTC)
    produce(settings, mixed_events(events, customers, now))
    engine = bench_engine(settings)
    runs: dict[str, list[LoopRun]] = {name: [] for name in LOOPS}
    for round_ in range(rounds):
        # the passthrough produces one record per event, or fails
        runs["passthrough"].append(LoopRun(raw_passthrough_rate(settings, events), events))
        for name in LOOPS[1:]:
            path = settings.data_dir / f"floor-{round_}-{name.split(',')[0]}"
            db = Rdict(str(path), options=Options(raw_mode=True))
            spent = dict.fromkeys(CORE_PHASES, 0.0)
            try:
                handle = (
                    _state_only(db, changelog, output)
                    if name == LOOPS[1]
                    else _pure_core(db, changelog, output, engine, now, customers, spent)
                )
                run = asyncio.run(_run_loop(settings, handle, events, timeout))
            finally:
                db.close()
            if name == LOOPS[2]:
                per_event = {phase: seconds / events * 1e6 for phase, seconds in spent.items()}
                run = replace(run, phases=per_event)
            runs[name].append(run)
    return runs


def render(runs: dict[str, list[LoopRun]]) -> str:
    """A line per loop: each round's events/s, µs per event and ratio to the passthrough's,
    both of the mean rate."""

    def mean(each: list[LoopRun]) -> float:
        return sum(run.rate for run in each) / len(each)

    baseline = mean(runs["passthrough"])
    lines = [f"{'loop':<22} | {'events/s (each round)':<28} | {'µs/event':>8} | ratio"]
    for name, each in runs.items():
        rates = ", ".join(f"{run.rate:,.0f}" for run in each)
        average = mean(each)
        lines.append(
            f"{name:<22} | {rates:<28} | {1e6 / average:>8,.1f} | {average / baseline:.3f}"
        )
    lines.extend(_phase_lines(runs.get(LOOPS[2], [])))
    return "\n".join(lines)


def _phase_lines(core: list[LoopRun]) -> list[str]:
    """The core loop's µs per event in each phase, the mean of its rounds, against its whole
    µs per event (the rest: fetching, producing, waiting for acks, committing)."""
    timed = [run for run in core if run.phases]
    if not timed:
        return []
    lines = [f"{LOOPS[2]}, µs per event by phase (mean of {len(timed)} rounds):"]
    means = {p: sum(run.phases[p] for run in timed) / len(timed) for p in CORE_PHASES}
    lines += [f"  {phase:<30} {value:>8,.1f}" for phase, value in means.items()]
    whole = sum(1e6 / run.rate for run in timed) / len(timed)
    lines.append(f"  {'in the handler':<30} {sum(means.values()):>8,.1f} of {whole:,.1f}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m streams._bench_floor")
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0, help="per loop, seconds")
    args = parser.parse_args(argv)
    base = Settings()
    workdir = Path(tempfile.mkdtemp(prefix="polku-floor-"))
    try:
        with broker_bootstrap(base.kafka_bootstrap, log_path=workdir / "broker.log") as bootstrap:
            settings = bench_settings(base, bootstrap, workdir, "floor")
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            tune_garbage_collector(settings)  # as `polku worker` (and `polku bench`) does
            runs = floor_rates(settings, args.events, args.customers, args.rounds, args.timeout)
        print(render(runs), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
