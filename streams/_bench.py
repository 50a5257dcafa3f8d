"""`polku bench`: what polku moves on this machine, next to what the raw Kafka client moves.

Every scenario runs polku and its baseline in the same run on the same broker and prints the
ratio. Workers run as separate processes, exactly as `polku worker` runs in production; the
figures are read from the worker's own metrics and from the records' Kafka timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition as AIOTopicPartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from journeys import CustomerState, Engine, load_journeys
from schemas import PolkuError, decode_touchpoint
from streams._bench_engine import BENCH_POLICY, LIBRARY, engine_rate
from streams._bench_load import Generated, mixed_events, registrations, signups
from streams._cli_stats import ScrapeError, scrape
from streams._faust_fixes import aiokafka_client_config, fetch_highwaters
from streams._kafka_security import aiokafka_security_kwargs
from streams._producer import TouchpointProducer
from streams._settings import Settings
from streams._topics import ensure_topics, run_scoped
from streams.broker import broker_bootstrap, free_port

_POLL = 0.5
_FIRST_RECORD_SECONDS = 15.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # the unit of /proc's CPU times


class BenchError(PolkuError):
    """A benchmark could not complete (a worker died, or a phase timed out)."""


@dataclass(frozen=True)
class Scale:
    events: int = 60_000
    customers: int = 5_000
    timers: int = 20_000
    burst: int = 2_000
    burst_load: float = 0.0
    latency_seconds: float = 10.0
    latency_rate: float = 0.0  # B2's signups/s; 0: half of the run's B1 rate
    recovery_customers: int = 20_000
    timeout_seconds: float = 600.0


@dataclass
class Row:
    scenario: str
    measure: str
    polku: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    facts: dict[str, float] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(_render([row], header=False), flush=True)


def _render(rows: Iterable[Row], header: bool = True) -> str:
    columns = ("scenario", "measure", "polku", "baseline", "ratio", "target")
    widths = (4, 34, 22, 22, 7, 14)
    lines = []
    if header:
        lines.append(" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
        lines.append("-+-".join("-" * w for w in widths))
    for row in rows:
        values = (row.scenario, row.measure, row.polku, row.baseline, row.ratio, row.target)
        lines.append(" | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the pieces every scenario uses


def bench_settings(base: Settings, bootstrap: str, workdir: Path, name: str) -> Settings:
    run = f"bench-{name}-{uuid.uuid4().hex[:6]}"
    return base.model_copy(
        update=run_scoped(run)
        | {
            "kafka_bootstrap": bootstrap,
            "data_dir": workdir / run,
            "journeys_dir": LIBRARY,
            # journeys, not the policy: a strict policy would suppress most marketing sends
            "contact_policy_file": BENCH_POLICY,
            "metrics_port": free_port(),
            "log_level": "info",
        }
    )


class Worker:
    """One `polku worker` process, read through its metrics endpoint."""

    def __init__(self, settings: Settings, log_path: Path, disk: str = "") -> None:
        """`disk` names a data directory of its own, for a second worker on this machine."""
        update: dict[str, object] = {"metrics_port": free_port()}
        if disk:
            update["data_dir"] = settings.data_dir / disk
            (settings.data_dir / disk).mkdir(parents=True, exist_ok=True)
        self.settings = settings.model_copy(update=update)
        env = {k: v for k, v in os.environ.items() if not k.startswith("POLKU_")}
        self.started = time.monotonic()
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                env=env | self.settings.to_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.log_path = log_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.metrics_port}/metrics"

    def metric(self, name: str, exclude: str | None = None) -> float:
        """The sum of a metric's samples (0 while the endpoint is not up yet)."""
        self.check_alive()
        try:
            page = scrape(self.url)
        except ScrapeError:
            return 0.0
        return _sum_samples(page, name, exclude)

    def peak_rss_bytes(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(match.group(1)) * 1024 if match else 0

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise BenchError(f"worker exited with {self.process.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


def _sum_samples(page: str, name: str, exclude: str | None) -> float:
    total = 0.0
    for line in page.splitlines():
        if not line.startswith(name) or line[len(name)] not in " {":
            continue
        if exclude and exclude in line:
            continue
        total += float(line.rsplit(" ", 1)[1])
    return total


def agent_phases(page: str) -> dict[str, float]:
    """A worker's agent seconds by phase (`polku_worker_agent_seconds_total`), and `other`:
    what the phases leave of the whole (`agent`)."""
    phases: dict[str, float] = {}
    for family in text_string_to_metric_families(page):
        if family.name != "polku_worker_agent_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                phases[sample.labels["phase"]] = sample.value
    if "agent" in phases:
        parts = sum(seconds for phase, seconds in phases.items() if phase != "agent")
        phases["other"] = phases["agent"] - parts
    return phases


def produce(settings: Settings, events: Iterable[Generated]) -> int:
    producer = TouchpointProducer(settings)
    try:
        for event in events:
            producer.send_raw(event.key, event.value)
        return producer.close()
    finally:
        producer.close()


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, poll: float = _POLL
) -> float:
    """Poll until `condition()`; the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)
    return time.monotonic()


def processed(worker: Worker) -> float:
    """Touchpoints the journey agent has finished (timer firings excluded)."""
    return worker.metric("polku_events_total", exclude='type="timer.fired"')


def measure_rate(
    workers: Sequence[Worker], total: int, timeout: float, cpu: CpuWindow | None = None
) -> tuple[float, float]:
    """(events/s, seconds) of the workers together, from the first processed event to the
    last, read at `_POLL`; `cpu`, if given, spans the same.

    A run so small that the workers finished it before the first read counts from the first
    worker's start instead, its start-up included: a lower bound, not a zero."""

    def done_so_far() -> float:
        return sum(processed(worker) for worker in workers)

    first = wait_until(lambda: done_so_far() > 0, timeout, "the workers' first event")
    started_count = done_so_far()
    if started_count >= total:
        if cpu is not None:
            cpu.end()  # begun when the worker started
        seconds = max(first - workers[0].started, 1e-9)
        return total / seconds, seconds
    if cpu is not None:
        cpu.begin()
    done = wait_until(lambda: done_so_far() >= total, timeout, f"{total} events processed")
    if cpu is not None:
        cpu.end()
    seconds = max(done - first, 1e-9)
    return (total - started_count) / seconds, seconds


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU seconds process `pid` has used so far, all its threads (Linux)."""
    # the fields after the command, which may hold spaces and parentheses itself
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds all the machine's cores have spent busy so far (Linux `/proc/stat`)."""
    # user nice system idle iowait irq softirq steal ...: idle and waiting are not busy, and
    # time the hypervisor gave to others (steal) was not ours
    user, nice, system, _, _, irq, softirq = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]
    )
    return (user + nice + system + irq + softirq) / _CLOCK_TICKS


class CpuWindow:
    """The CPU a worker process and the whole machine used over a span, in cores (1.0: one
    core busy for the whole span), from the kernel's accounting: what the worker could have
    had, beside what the broker and the load generator took on the same cores.

    The span starts when the process started (`started`, monotonic) unless `begin` moves it."""

    def __init__(self, pid: int, started: float) -> None:
        self._pid = pid
        self._start = (started, 0.0, machine_busy_seconds())
        self._end: tuple[float, float, float] | None = None

    def _sample(self) -> tuple[float, float, float]:
        return time.monotonic(), process_cpu_seconds(self._pid), machine_busy_seconds()

    def begin(self) -> None:
        self._start = self._sample()

    def end(self) -> None:
        self._end = self._sample()

    def cores(self) -> tuple[float, float]:
        """(worker, machine) cores used over the span."""
        if self._end is None:
            raise BenchError("the CPU window was never ended")
        (began, worker_began, machine_began), (ended, worker, machine) = self._start, self._end
        seconds = max(ended - began, 1e-9)
        return (worker - worker_began) / seconds, (machine - machine_began) / seconds

    def report(self, report: Report, scenario: str) -> None:
        worker, machine = self.cores()
        report.facts[f"{scenario}_cpu_worker_pct"] = 100 * worker
        report.facts[f"{scenario}_cpu_machine_pct"] = 100 * machine


def action_span_rate(actions: Sequence[tuple[str, float]], events: int) -> float:
    """Events/s of a finished run, over the span from its first action to its last by their
    Kafka timestamps.

    Those are the workers' own produce times, to the millisecond, and a worker sends an
    event's actions as it processes the event; a poll of their metrics is late by up to
    `_POLL` at either end, which is a sixth of a three-second run. Only the few events before
    the first action and after the last fall outside the span."""
    stamps = sorted(stamp for _, stamp in actions)
    if len(stamps) < 2:
        raise BenchError(f"{len(stamps)} actions for {events} events: too few to time the run")
    return events / max(stamps[-1] - stamps[0], 1e-3)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# ---------------------------------------------------------------------------------------------
# baseline: the raw aiokafka client, consume -> orjson parse -> produce


async def _raw_passthrough(settings: Settings, target: str, total: int) -> float:
    client = {
        "bootstrap_servers": settings.require_bootstrap(),
        **aiokafka_security_kwargs(settings),
    }
    consumer = AIOKafkaConsumer(
        settings.touchpoints_topic,
        **client,
        group_id=f"bench-raw-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(**client, acks="all", linger_ms=5)
    await consumer.start()
    await producer.start()
    try:
        seen = 0
        started = 0.0
        while seen < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if batches and not started:
                started = time.monotonic()
            sends = []
            for records in batches.values():
                for record in records:
                    document = orjson.loads(record.value or b"")
                    value = orjson.dumps(document)
                    sends.append(await producer.send(target, value=value, key=record.key))
            await asyncio.gather(*sends)
            seen += len(sends)
            await consumer.commit()
        return total / max(time.monotonic() - started, 1e-9)
    finally:
        await consumer.stop()
        await producer.stop()


def raw_passthrough_rate(settings: Settings, total: int) -> float:
    target = f"{settings.app_id}.raw-out"
    ensure_topics(settings, [target])
    return asyncio.run(_raw_passthrough(settings, target, total))


# ---------------------------------------------------------------------------------------------
# the scenarios


def bench_throughput(
    base: Settings, bootstrap: str, workdir: Path, scale: Scale, report: Report
) -> None:
    settings = bench_settings(base, bootstrap, workdir, "b1")
    ensure_topics(settings)
    now = datetime.now(UTC)
    produce(settings, mixed_events(scale.events, scale.customers, now))
    baseline = raw_passthrough_rate(settings, scale.events)
    worker = Worker(settings, workdir / "b1-worker.log")
    cpu = CpuWindow(worker.process.pid, worker.started)
    try:
        polled, _ = measure_rate([worker], scale.events, scale.timeout_seconds, cpu)
        # the last batch counts its phases just after its events: a moment for that
        time.sleep(_POLL)
        phases = agent_phases(scrape(worker.url))
    finally:
        worker.stop()
    rate = action_span_rate(_read_actions(settings, None, scale.timeout_seconds), scale.events)
    # what bounds the ratio before any Kafka or Faust: the pure core alone on the same mix
    core = engine_rate(base, scale.events, scale.customers)
    report.facts["b1_rate"] = rate
    report.facts["b1_rate_polled"] = polled
    cpu.report(report, "b1")
    for phase, seconds in phases.items():
        report.facts[f"b1_us_{phase}"] = seconds / scale.events * 1e6
    report.add(
        Row(
            "B1",
            f"events/s, 1 worker, {scale.events} events, first to last action",
            f"{rate:,.0f}",
            f"{baseline:,.0f} (aiokafka)",
            f"{rate / baseline:.3f}",
            ">= 0.5",
        )
    )
    _report_core(core, baseline, report)


def _report_core(core: dict[str, float], baseline: float, report: Report) -> None:
    """The pure core's own rate on B1's mix: near the ratio a worker would reach if Kafka, Faust,
    the table and the metrics cost nothing (a worker decodes a state only on a cache miss)."""
    report.facts["b1_core_rate"] = core["events_per_second"]
    report.facts["b1_core_us_per_event"] = core["us_per_event"]
    report.add(
        Row(
            "B1",
            "pure core alone, offline (decode, load, advance, encode): events/s",
            f"{core['events_per_second']:,.0f}",
            f"{baseline:,.0f} (aiokafka)",
            f"{core['events_per_second'] / baseline:.3f}",
            "",
        )
    )


def _action_latencies(
    settings: Settings, produced_at: dict[str, float], want: int, timeout: float
) -> list[float]:
    """Seconds from each touchpoint's produce time to its action's, from Kafka timestamps."""
    consumer = _consumer(settings, [settings.action_topic("email")])
    latencies: list[float] = []
    deadline = time.monotonic() + timeout
    try:
        while len(latencies) < want and time.monotonic() < deadline:
            for message in consumer.consume(10_000, timeout=0.5):
                if message.error() or message.value() is None:
                    continue
                action = orjson.loads(message.value() or b"")
                sent = produced_at.get(str(action.get("triggered_by")))
                if sent is not None:
                    latencies.append(message.timestamp()[1] / 1000 - sent)
    finally:
        consumer.close()
    return latencies


def bench_latency(
    base: Settings, bootstrap: str, workdir: Path, scale: Scale, report: Report
) -> None:
    rate = latency_rate(scale, report.facts)
    settings = bench_settings(base, bootstrap, workdir, "b2")
    ensure_topics(settings)
    worker = Worker(settings, workdir / "b2-worker.log")
    cpu = CpuWindow(worker.process.pid, worker.started)

    def warmed() -> None:
        wait_until(lambda: processed(worker) >= 1, scale.timeout_seconds, "the warm-up event")
        cpu.begin()

    try:
        count = int(rate * scale.latency_seconds)
        produced_at = _paced_signups(settings, count, rate, warmed)
        cpu.end()  # the span of the paced load
        # 10% of signups are the welcome journey's holdout: they get no action
        latencies = _action_latencies(settings, produced_at, int(count * 0.85), 120.0)
    finally:
        worker.stop()
    if not latencies:
        raise BenchError("no action came back for the latency run")
    cpu.report(report, "b2")
    ms = [1000 * s for s in latencies]
    p50, p99, worst = percentile(ms, 0.5), percentile(ms, 0.99), max(ms)
    report.facts |= {"b2_rate": rate, "b2_p50_ms": p50, "b2_p99_ms": p99, "b2_max_ms": worst}
    report.add(
        Row(
            "B2",
            f"latency ms at {rate:,.0f}/s, p50/p99/max",
            f"{p50:.0f} / {p99:.0f} / {worst:.0f}",
            "",
            "",
            "p99 <= 100 ms",
        )
    )


def latency_rate(scale: Scale, facts: dict[str, float]) -> float:
    """B2's signups/s: `scale.latency_rate` when given, else half of the run's B1 rate (the
    issue's definition), else (B2 without B1) 500/s; never under 10/s."""
    if scale.latency_rate > 0:
        return scale.latency_rate
    return max(10.0, facts.get("b1_rate", 1000.0) / 2)


def _paced_signups(
    settings: Settings, count: int, rate: float, warmed: Callable[[], object]
) -> dict[str, float]:
    """Produce `count` signups at `rate`; the produce time of each, by event id.

    The producer sends a warm-up event first and the pacing starts once `warmed()` returns:
    an idempotent librdkafka producer holds its first records ~0.5 s while it gets its
    producer id, which is the client's start, not polku's latency.
    """
    producer = TouchpointProducer(settings)
    produced_at: dict[str, float] = {}
    try:
        for event in signups(0, 1, datetime.now(UTC), prefix="warm"):
            producer.send_raw(event.key, event.value)
        producer.flush()
        warmed()
        started = time.monotonic()
        wall = time.time() - started
        for n, event in enumerate(signups(0, count, datetime.now(UTC))):
            due = started + n / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            producer.send_raw(event.key, event.value)
            produced_at[event.event_id] = wall + time.monotonic()
        producer.flush()
    finally:
        producer.close()
    return produced_at


class _InputLoad(threading.Thread):
    """Signups produced at `rate` until `until` (or `stop`), to keep the worker busy."""

    def __init__(self, settings: Settings, rate: float, until: datetime) -> None:
        super().__init__(name="bench-input-load", daemon=True)
        self._settings, self._rate, self._until = settings, rate, until
        self.stop_now = threading.Event()
        self.produced_at: dict[str, float] = {}  # by event id

    def run(self) -> None:
        seconds = max(0.0, (self._until - datetime.now(UTC)).total_seconds())
        count = int(self._rate * seconds)  # bounded in count as in time
        producer = TouchpointProducer(self._settings)
        try:
            started = time.monotonic()
            for n, event in enumerate(signups(0, count, datetime.now(UTC), prefix="load")):
                if self.stop_now.is_set():
                    break
                pause = started + n / self._rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                producer.send_raw(event.key, event.value)
                self.produced_at[event.event_id] = time.time()
            producer.flush()
        finally:
            producer.close()


@contextlib.contextmanager
def _input_load(settings: Settings, rate: float, until: datetime) -> Iterator[_InputLoad]:
    load = _InputLoad(settings, rate, until)
    if rate <= 0:
        yield load
        return
    load.start()
    try:
        yield load
    finally:
        load.stop_now.set()
        load.join(timeout=30)


def _reminder_lags(settings: Settings, due: datetime, want: int, timeout: float) -> list[float]:
    """Seconds from `due` to each event reminder's action record (its Kafka timestamp)."""
    stamps = _read_actions(settings, want, timeout, journey="event_reminder")
    return [stamp - due.timestamp() for _, stamp in stamps]


def _read_actions(
    settings: Settings,
    want: int | None,
    timeout: float,
    journey: str | None = None,
    key: str = "action_id",
) -> list[tuple[str, float]]:
    """(action[key], Kafka timestamp) of the actions on every action topic: until `want` are
    read, or (want None) until the topics have been idle for two seconds."""
    consumer = _consumer(settings, list(settings.action_topics.values()))
    found: list[tuple[str, float]] = []
    deadline = time.monotonic() + timeout
    idle_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(10_000, timeout=0.5)
            for message in batch:
                if message.error() or message.value() is None:
                    continue
                action = orjson.loads(message.value() or b"")
                if journey is None or action.get("journey") == journey:
                    found.append((str(action[key]), message.timestamp()[1] / 1000))
            if batch:
                idle_since = time.monotonic()
            if want is not None and len(found) >= want:
                break
            # idle means two quiet seconds after the first record: the consumer's own start
            # (metadata, first fetch) can take longer than that, and an oracle read short
            # would hide lost actions
            quiet = time.monotonic() - idle_since
            if want is None and quiet > (2.0 if found else _FIRST_RECORD_SECONDS):
                break
    finally:
        consumer.close()
    return found


def bench_timers(
    base: Settings, bootstrap: str, workdir: Path, scale: Scale, report: Report
) -> None:
    """B3: many pending timers on one worker; a burst falling due in one second; a restart."""
    settings = bench_settings(base, bootstrap, workdir, "b3")
    ensure_topics(settings)
    waiting = max(0, scale.timers - scale.burst)
    worker = Worker(settings, workdir / "b3-worker-1.log")
    try:
        produce(settings, signups(0, waiting, datetime.now(UTC)))
        _, seconds = measure_rate([worker], waiting, scale.timeout_seconds)
        # the burst is due once it is registered and the worker has been restarted
        due = datetime.now(UTC) + timedelta(seconds=30 + scale.burst / 500)
        produce(settings, registrations(0, scale.burst, datetime.now(UTC), due))
        wait_until(
            lambda: processed(worker) >= waiting + scale.burst, scale.timeout_seconds, "the burst"
        )
        pending = worker.metric("polku_timers_pending")
        rss = worker.peak_rss_bytes()
    finally:
        worker.stop()
    stopped = time.monotonic()
    restarted = Worker(settings, workdir / "b3-worker-2.log")
    try:
        wait_until(
            lambda: restarted.metric("polku_timers_pending") >= pending,
            scale.timeout_seconds,
            "the timers after the restart",
        )
        restart_seconds = time.monotonic() - stopped
        # the lag is the firing's, from when the timers were due on a running worker: a restart
        # that outlasts the due time (a million timers' state to open) is reported on its own
        ready = datetime.now(UTC)
        with _input_load(settings, scale.burst_load, until=due + timedelta(seconds=5)) as load:
            lags = _reminder_lags(
                settings, max(due, ready), scale.burst, scale.timeout_seconds + 60
            )
        time.sleep(2.0)  # a second firing of any timer would show up here
        # read to the end: behind the reminders lie all the welcome actions (a million at full
        # size, more than a 30 s read reached, which counted every reminder as lost)
        reminders = _read_actions(
            settings, None, scale.timeout_seconds + 60, journey="event_reminder"
        )
        # the signups produced from 1 s before the burst to 3 s after it, not those of the
        # load's start (a fresh idempotent producer holds its first records ~0.5 s)
        start, end = due.timestamp() - 1, due.timestamp() + 3
        near = {key: at for key, at in load.produced_at.items() if start <= at <= end}
        # 10% of signups are the welcome journey's holdout: they get no action
        want = int(len(near) * 0.85)
        latencies = _action_latencies(settings, near, want, 60.0) if want else []
        input_ms = [1000 * seconds for seconds in latencies]
        rss = max(rss, restarted.peak_rss_bytes())
        fired_ahead = restarted.metric("polku_timers_fired_ahead_total")
    finally:
        restarted.stop()
    ids = [action_id for action_id, _ in reminders]
    report.facts["b3_load_sent"] = len(load.produced_at)
    report.facts["b3_lost"] = scale.burst - len(set(ids))
    report.facts["b3_fired_twice"] = len(ids) - len(set(ids))
    report.add(
        Row(
            "B3",
            f"{pending:,.0f} pending timers: peak RSS",
            f"{rss / 2**20:,.0f} MiB",
            "",
            "",
            "<= 1.5 GiB",
        )
    )
    report.add(Row("B3", "time to register them", f"{seconds:.1f} s ({waiting / seconds:,.0f}/s)"))
    report.add(
        Row(
            "B3",
            "restart: stop to every timer back in the index",
            f"{restart_seconds:.1f} s" + (" (after the burst was due)" if ready > due else ""),
        )
    )
    lag_ms = [1000 * lag for lag in lags]
    since = "from the restart" if ready > due else "from the due time"
    if scale.burst_load:
        since += f", under {scale.burst_load:,.0f} signups/s"
    report.add(
        Row(
            "B3",
            f"{scale.burst:,} due in one second: lag p50/p99 {since}",
            f"{percentile(lag_ms, 0.5):,.0f} / {percentile(lag_ms, 0.99):,.0f} ms",
            "",
            "",
            "p99 <= 1 s",
        )
    )
    report.add(Row("B3", "of them fired as worked out ahead (idle)", f"{fired_ahead:,.0f}"))
    if input_ms:
        report.add(
            Row(
                "B3",
                f"{len(input_ms):,} signups from 1 s before to 3 s after: p50/p99/max",
                f"{percentile(input_ms, 0.5):,.0f} / {percentile(input_ms, 0.99):,.0f} / "
                f"{max(input_ms):,.0f} ms",
            )
        )
    report.add(
        Row(
            "B3",
            "after a restart: fired / distinct / lost",
            f"{len(ids)} / {len(set(ids))} / {scale.burst - len(set(ids))}",
            "",
            "",
            "0 lost, 0 twice",
        )
    )


def bench_recovery(
    base: Settings, bootstrap: str, workdir: Path, scale: Scale, report: Report
) -> None:
    """B4: SIGKILL a worker holding state; seconds until a new event is processed again."""
    settings = bench_settings(base, bootstrap, workdir, "b4")
    ensure_topics(settings)
    customers = scale.recovery_customers
    worker = Worker(settings, workdir / "b4-worker-0.log")
    try:
        produce(settings, signups(0, customers, datetime.now(UTC)))
        measure_rate([worker], customers, scale.timeout_seconds)
        time.sleep(2 * settings.commit_interval_seconds)
    finally:
        worker.kill()
    for run, keep in enumerate((True, False), start=1):
        if not keep:
            shutil.rmtree(settings.data_dir, ignore_errors=True)
        seconds = _seconds_to_first_new_action(settings, workdir, run, scale)
        report.add(
            Row(
                "B4",
                f"{customers:,} customers, SIGKILL, {'disk kept' if keep else 'disk lost'}",
                f"{seconds:.1f} s to a new action",
                "",
                "",
                "<= 30 s" if keep else "",
            )
        )


def _seconds_to_first_new_action(
    settings: Settings, workdir: Path, run: int, scale: Scale
) -> float:
    """From starting a worker to the action of a new signup, produced right after the start."""
    probe = _treated_signup(settings, 10_000_000 + 1000 * run)
    watch = _consumer(settings, [settings.action_topic("email")])
    started = time.monotonic()
    worker = Worker(settings, workdir / f"b4-worker-{run}.log")
    try:
        produce(settings, [probe])
        deadline = time.monotonic() + scale.timeout_seconds
        while time.monotonic() < deadline:
            worker.check_alive()
            for message in watch.consume(10_000, timeout=0.2):
                if message.error() is None and probe.event_id.encode() in (message.value() or b""):
                    return time.monotonic() - started
        raise BenchError("the restarted worker never sent the probe's welcome email")
    finally:
        watch.close()
        worker.kill()


def _consumer(settings: Settings, topics: list[str]) -> Consumer:
    """A reader of `topics` from their beginning, assigned (no group join to wait for)."""
    consumer = Consumer(
        settings.kafka_client_config()
        | {"group.id": f"bench-read-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False}
    )
    metadata = consumer.list_topics(timeout=10).topics
    consumer.assign(
        [
            TopicPartition(topic, partition, OFFSET_BEGINNING)
            for topic in topics
            if topic in metadata
            for partition in metadata[topic].partitions
        ]
    )
    return consumer


def _treated_signup(settings: Settings, first: int) -> Generated:
    """A signup whose customer is not in the welcome journey's holdout (it gets an email)."""
    engine = Engine(load_journeys(settings.journeys_dir or LIBRARY))
    now = datetime.now(UTC)
    for candidate in signups(first, 100, now, prefix="probe"):
        event = decode_touchpoint(candidate.value)
        outcome = engine.advance(CustomerState(customer_id=event.customer.key), event, now)
        if outcome.actions:
            return candidate
    raise BenchError("no treated probe customer among 100")


# B5's runs, by number of workers: one, two, two, one. The machine's speed drifts by ~15 %
# within minutes, which a single run of each carried into the ratio (1.68-2.06 in ten runs
# of one day at one commit); in this order a drift at a steady pace cancels out of the means
_SCALE_OUT_RUNS = (1, 2, 2, 1)


def bench_scale_out(
    base: Settings, bootstrap: str, workdir: Path, scale: Scale, report: Report
) -> None:
    """B5: two workers against one on the same events; then a worker killed mid-way."""
    now = datetime.now(UTC)
    rates: dict[int, list[float]] = {1: [], 2: []}
    polled: dict[int, list[float]] = {1: [], 2: []}
    emitted: list[list[tuple[str, float]]] = []
    for run, count in enumerate(_SCALE_OUT_RUNS, start=1):
        # one name per run for its topics and its workers' logs
        label = f"b5-run{run}-{count}"
        settings = bench_settings(base, bootstrap, workdir, label)
        ensure_topics(settings)
        produce(settings, mixed_events(scale.events, scale.customers, now))
        polled[count].append(_group_rate(settings, workdir, label, count, scale))
        emitted.append(_read_actions(settings, None, scale.timeout_seconds))
        rates[count].append(action_span_rate(emitted[-1], scale.events))
        report.facts[f"b5_rate_run{run}_{count}w"] = rates[count][-1]
    one, two = statistics.fmean(rates[1]), statistics.fmean(rates[2])
    for count in (1, 2):
        report.facts[f"b5_rate_polled_{count}"] = statistics.fmean(polled[count])
    report.facts |= {"b5_rate_1": one, "b5_rate_2": two, "b5_ratio": two / one}
    report.add(
        Row(
            "B5",
            "events/s, 2 workers vs 1, first to last action, mean of runs 1-2-2-1",
            f"{two:,.0f}",
            f"{one:,.0f} (1 worker)",
            f"{two / one:.2f}",
            ">= 1.6",
        )
    )
    # what one undisturbed worker emitted for the same events is the oracle
    expected = {action_id for action_id, _ in emitted[0]}
    lost, duplicates = _kill_one_of_two(base, bootstrap, workdir, scale, now, expected)
    report.facts["b5_lost"] = lost
    report.facts["b5_expected"] = len(expected)
    report.add(
        Row(
            "B5",
            "one of two killed mid-run: lost / dupes",
            f"{lost} / {duplicates}",
            f"{len(expected):,} actions (1 worker)",
            "",
            "0 lost",
        )
    )


def _group_rate(settings: Settings, workdir: Path, label: str, count: int, scale: Scale) -> float:
    workers = [Worker(settings, workdir / f"{label}-{n}.log", f"w{n}") for n in range(count)]
    try:
        rate, _ = measure_rate(workers, scale.events, scale.timeout_seconds)
        return rate
    finally:
        for worker in workers:
            worker.stop()


def _kill_one_of_two(
    base: Settings,
    bootstrap: str,
    workdir: Path,
    scale: Scale,
    now: datetime,
    expected: set[str],
) -> tuple[int, int]:
    settings = bench_settings(base, bootstrap, workdir, "b5-kill")
    ensure_topics(settings)
    produce(settings, mixed_events(scale.events, scale.customers, now))
    workers = [Worker(settings, workdir / f"b5-kill-{n}.log", f"w{n}") for n in range(2)]
    try:
        wait_until(
            lambda: sum(processed(w) for w in workers) >= scale.events / 3,
            scale.timeout_seconds,
            "a third of the events",
        )
        workers[1].kill()

        def caught_up() -> bool:
            workers[0].check_alive()  # a crashed survivor says why, with its log
            return _all_committed(settings, scale.events)

        try:
            wait_until(caught_up, scale.timeout_seconds, "the survivor to take over")
        except BenchError as exc:
            # where the survivor stopped: which partitions' commits lag behind their ends
            raise BenchError(
                f"{exc}; committed/end per partition: {_commit_gaps(settings)}"
            ) from exc
        _wait_until_steady(workers[0], scale.timeout_seconds)
    finally:
        for worker in workers:
            worker.stop()
    emitted = [action_id for action_id, _ in _read_actions(settings, None, 60.0)]
    return len(expected - set(emitted)), len(emitted) - len(set(emitted))


def _wait_until_steady(worker: Worker, timeout: float) -> None:
    """Until the worker's processed count has not moved for three seconds."""
    deadline = time.monotonic() + timeout
    last, since = -1.0, time.monotonic()
    while time.monotonic() - since < 3.0:
        if time.monotonic() > deadline:
            raise BenchError("the surviving worker never became idle")
        now = processed(worker)
        if now != last:
            last, since = now, time.monotonic()
        time.sleep(_POLL)


def _committed(settings: Settings) -> list[tuple[int, int]]:
    """(partition, committed offset) of the group on the touchpoints topic."""
    consumer = Consumer(settings.kafka_client_config() | {"group.id": settings.app_id})
    try:
        topic = settings.touchpoints_topic
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = [TopicPartition(topic, p) for p in metadata.partitions]
        return [
            (tp.partition, max(tp.offset, 0)) for tp in consumer.committed(partitions, timeout=10)
        ]
    finally:
        consumer.close()


def _all_committed(settings: Settings, total: int) -> bool:
    """The group's committed offsets on the touchpoints topic cover every event."""
    return sum(offset for _, offset in _committed(settings)) >= total


def _commit_gaps(settings: Settings) -> str:
    """`partition: committed/end` on the touchpoints topic, the ends from fetch responses
    (Tansu's ListOffsets("latest") is wrong: DESIGN.md)."""
    committed = _committed(settings)
    topic = settings.touchpoints_topic
    listed = {AIOTopicPartition(topic, partition): offset for partition, offset in committed}
    ends = asyncio.run(fetch_highwaters(aiokafka_client_config(settings), listed))
    return ", ".join(
        f"{partition}: {offset}/{ends[AIOTopicPartition(topic, partition)]}"
        for partition, offset in committed
    )


SCENARIOS: dict[str, Callable[[Settings, str, Path, Scale, Report], None]] = {
    "b1": bench_throughput,
    "b2": bench_latency,
    "b3": bench_timers,
    "b4": bench_recovery,
    "b5": bench_scale_out,
}


def run_bench(base: Settings, scale: Scale, names: list[str]) -> Report:
    workdir = Path(tempfile.mkdtemp(prefix="polku-bench-"))
    report = Report()
    print(f"polku bench: {os.cpu_count()} cores, work directory {workdir}", flush=True)
    with broker_bootstrap(base.kafka_bootstrap, log_path=workdir / "broker.log") as bootstrap:
        print(_render([]), flush=True)
        for name in names:
            SCENARIOS[name](base, bootstrap, workdir, scale, report)
    print("\n" + _render(report.rows), flush=True)
    if report.facts:
        # the figures behind the table, e.g. the rates polled from the metrics beside the
        # first-to-last-action ones
        facts = ", ".join(
            f"{name} {_fact(name, value)}" for name, value in sorted(report.facts.items())
        )
        print(f"facts: {facts}", flush=True)
    return report


def _fact(name: str, value: float) -> str:
    # counts, rates and times read well whole; a ratio near 1.6 does not
    return f"{value:.2f}" if name.endswith("_ratio") else f"{value:,.0f}"
