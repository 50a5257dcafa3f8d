"""The offline engine benchmark runs the B1 mix through the pure core; no timing is asserted."""

from __future__ import annotations

from streams import Settings
from streams._bench_engine import PHASES, engine_rate


def test_a_tiny_run_processes_every_event_and_reports_positive_figures() -> None:
    figures = engine_rate(Settings(), events=200, customers=50)
    assert figures["events"] == 200
    expected = {"events", "events_per_second", "us_per_event", *(f"{p}_us" for p in PHASES)}
    assert set(figures) == expected
    assert all(value > 0 for value in figures.values())
