"""`polku bench` at its smallest: every scenario runs and its correctness facts hold.

Speed is what the benchmark prints, never asserted here (README, Performance).
"""

from __future__ import annotations

import pytest

from streams import Settings
from streams._bench import SCENARIOS, Scale, run_bench

pytestmark = pytest.mark.integration

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
    assert report.facts["b3_lost"] == 0
    assert report.facts["b3_fired_twice"] == 0
    assert report.facts["b3_load_sent"] > 0  # and fired while the worker had input
    assert report.facts["b5_expected"] > 0
    assert report.facts["b5_lost"] == 0
