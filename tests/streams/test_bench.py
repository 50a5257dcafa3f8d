"""`polku bench` at its smallest: every scenario runs and its correctness facts hold.

Speed is what the benchmark prints, never asserted here (README, Performance).
"""

from __future__ import annotations

import os
import time

import pytest
from prometheus_client import generate_latest

from streams import Settings
from streams._bench import (
    SCENARIOS,
    BenchError,
    CpuWindow,
    Scale,
    action_span_rate,
    agent_phases,
    latency_rate,
    machine_busy_seconds,
    process_cpu_seconds,
    run_bench,
)
from streams._cli_bench import cmd_bench, scale_from_args
from streams._metrics import AGENT_PHASES, WorkerMetrics
from streams.cli import _parser

TINY = Scale(
    events=600,
    customers=150,
    timers=300,
    burst=100,
    burst_load=20.0,  # signups/s while the burst falls due
    latency_seconds=2.0,
    recovery_customers=200,
    timeout_seconds=120.0,
)


@pytest.mark.integration
def test_every_scenario_runs_and_loses_nothing(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    report = run_bench(Settings(kafka_bootstrap=kafka_bootstrap), TINY, list(SCENARIOS))

    printed = capsys.readouterr().out
    assert {row.scenario for row in report.rows} == {"B1", "B2", "B3", "B4", "B5"}
    for row in report.rows:
        assert row.polku, row
        assert f"{row.scenario}   | {row.measure}" in printed
    assert report.facts["b1_rate"] > 0
    assert report.facts["b1_rate_polled"] > 0
    assert f"b1_rate_polled {report.facts['b1_rate_polled']:,.0f}" in printed
    # where the B1 worker's time went, µs per event, from its own metrics
    phases = {name: value for name, value in report.facts.items() if name.startswith("b1_us_")}
    assert sorted(phases) == sorted(f"b1_us_{phase}" for phase in (*AGENT_PHASES, "other"))
    assert phases["b1_us_advance"] > 0
    assert phases["b1_us_agent"] > phases["b1_us_advance"]
    # the pure core alone on the same mix, offline, beside the worker
    assert report.facts["b1_core_rate"] > 0
    assert report.facts["b1_core_us_per_event"] > 0
    assert "pure core alone, offline" in printed
    # the CPU the B1 and B2 workers and the machine used, in % of a core
    for scenario in ("b1", "b2"):
        worker = report.facts[f"{scenario}_cpu_worker_pct"]
        assert 0 < worker <= 100 * (os.cpu_count() or 1) + 5, (scenario, worker)
        assert report.facts[f"{scenario}_cpu_machine_pct"] > 0
    # B2 at half of B1's rate, its latencies among the facts
    assert report.facts["b2_rate"] == pytest.approx(max(10.0, report.facts["b1_rate"] / 2))
    assert 0 < report.facts["b2_p50_ms"] <= report.facts["b2_p99_ms"] <= report.facts["b2_max_ms"]
    assert f"latency ms at {report.facts['b2_rate']:,.0f}/s" in printed
    assert report.facts["b3_lost"] == 0
    assert report.facts["b3_fired_twice"] == 0
    assert report.facts["b3_load_sent"] > 0  # and fired while the worker had input
    assert report.facts["b5_expected"] > 0
    assert report.facts["b5_lost"] == 0
    # B5: one worker, two, two, one; the ratio is that of the two means
    runs = sorted(name for name in report.facts if name.startswith("b5_rate_run"))
    assert runs == ["b5_rate_run1_1w", "b5_rate_run2_2w", "b5_rate_run3_2w", "b5_rate_run4_1w"]
    assert all(report.facts[name] > 0 for name in runs)
    one = (report.facts["b5_rate_run1_1w"] + report.facts["b5_rate_run4_1w"]) / 2
    two = (report.facts["b5_rate_run2_2w"] + report.facts["b5_rate_run3_2w"]) / 2
    assert report.facts["b5_rate_1"] == pytest.approx(one)
    assert report.facts["b5_ratio"] == pytest.approx(two / one)
    assert f"| {two / one:.2f}" in printed  # the table's ratio
    assert f"b5_ratio {two / one:.2f}" in printed  # and the facts'
    assert "mean of runs 1-2-2-1" in printed


def test_b2_runs_at_half_of_the_run_s_b1_rate_by_default() -> None:
    assert latency_rate(Scale(), {"b1_rate": 3_600.0}) == 1_800.0


def test_b2_runs_at_the_rate_given() -> None:
    assert latency_rate(Scale(latency_rate=1_750.0), {"b1_rate": 3_600.0}) == 1_750.0


def test_b2_without_b1_runs_at_500_per_second_and_never_under_10() -> None:
    assert latency_rate(Scale(), {}) == 500.0
    assert latency_rate(Scale(), {"b1_rate": 4.0}) == 10.0


def test_the_latency_rate_flag_reaches_the_scale() -> None:
    args = _parser().parse_args(["bench", "--scenarios", "b2", "--latency-rate", "1750"])

    assert scale_from_args(args).latency_rate == 1_750.0
    assert scale_from_args(_parser().parse_args(["bench"])) == Scale()


def test_a_negative_latency_rate_is_refused_before_anything_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = _parser().parse_args(["bench", "--latency-rate", "-1"])

    assert cmd_bench(Settings(kafka_bootstrap="127.0.0.1:1"), args) == 2
    assert (
        "--latency-rate must be 0 (half of B1's rate) or more, not -1.0" in capsys.readouterr().out
    )


def test_a_run_is_timed_from_its_first_action_to_its_last_in_any_order() -> None:
    actions = [("b", 100.5), ("a", 100.0), ("d", 102.0), ("c", 101.0)]

    assert action_span_rate(actions, events=1_000) == pytest.approx(500.0)


def test_a_run_of_one_instant_is_bounded_not_infinite() -> None:
    assert action_span_rate([("a", 5.0), ("b", 5.0)], events=10) == pytest.approx(10_000.0)


@pytest.mark.parametrize("actions", [[], [("a", 1.0)]])
def test_a_run_with_fewer_than_two_actions_cannot_be_timed(
    actions: list[tuple[str, float]],
) -> None:
    with pytest.raises(BenchError, match="too few to time the run"):
        action_span_rate(actions, events=10)


def test_the_agent_phases_are_read_from_a_worker_s_page_with_what_they_leave() -> None:
    metrics = WorkerMetrics()
    for phase, seconds in {"agent": 2.0, "decode": 0.25, "advance": 1.0}.items():
        metrics.phases.add(phase, seconds)
    metrics.phases.flush()
    metrics.phases.add("advance", 5.0)  # not flushed: not counted yet

    phases = agent_phases(generate_latest(metrics.registry).decode())

    assert phases == dict.fromkeys(AGENT_PHASES, 0.0) | {
        "agent": 2.0,
        "decode": 0.25,
        "advance": 1.0,
        "other": 0.75,
    }


def test_a_page_without_the_agent_phases_gives_none() -> None:
    assert agent_phases("# nothing here\n") == {}


def _burn_cpu(seconds: float) -> float:
    """Keep this thread busy for `seconds` of its process's CPU time (at most 10 s of wall
    time); the CPU seconds it took, by the process clock."""
    started, deadline = time.process_time(), time.monotonic() + 10.0
    total = 0
    while time.process_time() - started < seconds and time.monotonic() < deadline:
        total += sum(range(10_000))
    assert total > 0
    return time.process_time() - started


def test_a_process_s_cpu_time_is_read_as_its_own_clock_counts_it() -> None:
    before = process_cpu_seconds(os.getpid())
    burnt = _burn_cpu(0.3)
    read = process_cpu_seconds(os.getpid()) - before

    assert burnt >= 0.3
    # /proc counts in clock ticks (10 ms), the process clock to the nanosecond
    assert read == pytest.approx(burnt, abs=0.05)


def test_the_machine_s_busy_time_includes_this_process_s() -> None:
    process, machine = process_cpu_seconds(os.getpid()), machine_busy_seconds()
    _burn_cpu(0.3)
    used = process_cpu_seconds(os.getpid()) - process

    assert machine_busy_seconds() - machine >= used - 0.05


def test_a_cpu_window_gives_the_cores_used_over_its_span() -> None:
    window = CpuWindow(os.getpid(), time.monotonic())
    window.begin()
    began = time.monotonic()
    burnt = _burn_cpu(0.3)
    window.end()
    span = time.monotonic() - began

    worker, machine = window.cores()

    assert worker == pytest.approx(burnt / span, abs=0.1)
    assert machine >= worker - 0.1


def test_a_cpu_window_not_ended_has_no_figures() -> None:
    with pytest.raises(BenchError, match="never ended"):
        CpuWindow(os.getpid(), time.monotonic()).cores()
