"""The floor benchmark at its smallest: every loop reads every record and its records are
acked; speed is printed, never asserted (README, Performance)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams import Settings
from streams._bench import bench_settings
from streams._bench_floor import LOOPS, LoopRun, floor_rates, render

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
    assert runs["pure core, no Faust"][0].produced > EVENTS


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
