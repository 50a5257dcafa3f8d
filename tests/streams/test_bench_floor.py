"""The floor benchmark at its smallest: every loop reads every record and its records are
acked; speed is printed, never asserted (README, Performance)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams import Settings
from streams._bench import bench_settings
from streams._bench_floor import CORE_PHASES, LOOPS, LoopRun, floor_rates, render

EVENTS = 300


@pytest.mark.integration
def test_every_loop_reads_every_record_and_produces_what_it_should(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = bench_settings(Settings(), kafka_bootstrap, tmp_path, "floor")
    settings.data_dir.mkdir(parents=True)

    runs = floor_rates(settings, events=EVENTS, customers=50, rounds=1, timeout=120.0)

    assert list(runs) == list(LOOPS)
    assert all(len(each) == 1 and each[0].rate > 0 for each in runs.values())
    # a changelog record and an output record per event, no more
    assert runs["state, no journeys"][0].produced == 2 * EVENTS
    # a changelog record per event, and the journeys' actions on top
    [core] = runs["pure core, no Faust"]
    assert core.produced > EVENTS
    # every step of the core's handler timed, and together less than the whole loop
    assert list(core.phases) == list(CORE_PHASES)
    assert all(micros > 0 for micros in core.phases.values())
    assert sum(core.phases.values()) < 1e6 / core.rate
    assert runs["passthrough"][0].phases == {}


def test_the_table_gives_each_loop_its_rates_and_its_ratio_to_the_passthrough() -> None:
    table = render(
        {
            "passthrough": [LoopRun(20_000.0, 1), LoopRun(30_000.0, 1)],
            "pure core, no Faust": [LoopRun(2_500.0, 1)],
        }
    )

    lines = table.splitlines()
    assert lines[1].split("|")[1:] == [" 20,000, 30,000               ", "     40.0 ", " 1.000"]
    assert lines[2].split("|")[1:] == [" 2,500                        ", "    400.0 ", " 0.100"]


def test_the_core_loops_phases_are_the_mean_of_its_rounds_against_its_whole() -> None:
    first = dict.fromkeys(CORE_PHASES, 10.0) | {"advance": 100.0}
    second = dict.fromkeys(CORE_PHASES, 20.0) | {"advance": 200.0}
    table = render(
        {
            "passthrough": [LoopRun(20_000.0, 1)],
            "pure core, no Faust": [LoopRun(2_500.0, 1, first), LoopRun(2_000.0, 1, second)],
        }
    )

    lines = table.splitlines()
    assert lines[3] == "pure core, no Faust, µs per event by phase (mean of 2 rounds):"
    phases = dict(line.rsplit(maxsplit=1) for line in lines[4:11])
    assert {name.strip(): float(value) for name, value in phases.items()} == dict.fromkeys(
        CORE_PHASES, 15.0
    ) | {"advance": 150.0}
    # 6 phases of 15 and 150 µs, against (400 + 500) / 2 µs per event in all
    assert lines[11].split() == ["in", "the", "handler", "240.0", "of", "450.0"]
