"""Crash oracle: a worker killed with SIGKILL again and again loses no action and invents none.

The expected actions come from the pure engine run offline on the same events (the simulator);
action ids do not depend on the clock, so the worker's output must equal that set after dedupe
on `action_id`, however often it was killed and restarted while it worked.
"""

from __future__ import annotations

import os
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from journeys import Engine, load_journeys, simulate
from schemas import (
    CustomerRef,
    Touchpoint,
    decode_action,
)
from tests.integration.harness import (
    FAST_JOURNEYS,
    TopicReader,
    WorkerProcess,
    isolated_settings,
    produce,
)
from tests.integration.scenarios import abandoned_cart

pytestmark = pytest.mark.integration

# CI-sized by default; POLKU_CHAOS_CUSTOMERS=5000 POLKU_CHAOS_KILLS=10 for a large run
CUSTOMERS = int(os.environ.get("POLKU_CHAOS_CUSTOMERS", "300"))
KILLS = int(os.environ.get("POLKU_CHAOS_KILLS", "3"))
SECONDS_BETWEEN_KILLS = 4.0
SETTLE_TIMEOUT = 240.0


def _scenario(rng: random.Random) -> list[Touchpoint]:
    """Every customer abandons a cart; a third buy before the first reminder could go out."""
    start = datetime.now(UTC)
    events: list[Touchpoint] = []
    for n in range(CUSTOMERS):
        phone = f"+35840{n:07d}" if rng.random() < 0.7 else None
        customer = CustomerRef(customer_id=f"chaos-{n}", phone=phone)
        at = start + timedelta(milliseconds=n)
        events += abandoned_cart(f"chaos-{n}", customer, at, buys=n % 3 == 0)
    return events


def test_sigkill_loop_loses_no_action_and_invents_none(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = isolated_settings(kafka_bootstrap, tmp_path / "data")
    events = _scenario(random.Random(7))
    expected = {a.action_id for a in simulate(Engine(load_journeys(FAST_JOURNEYS)), events).actions}
    assert len(expected) > CUSTOMERS  # reminders for two thirds, coupons for most of those

    reader = TopicReader(kafka_bootstrap, list(settings.action_topics.values()))
    logs = tmp_path / "logs"
    logs.mkdir()
    worker = WorkerProcess(settings, logs / "worker-0.log").start()
    try:
        produce(settings, *events)
        for kill in range(1, KILLS + 1):
            time.sleep(SECONDS_BETWEEN_KILLS)
            reader.poll(0.1)
            worker.kill()
            worker = WorkerProcess(settings, logs / f"worker-{kill}.log").start()
        reader.wait_for(
            lambda ms: {decode_action(m.value() or b"").action_id for m in ms} >= expected,
            SETTLE_TIMEOUT,
            f"all {len(expected)} expected actions",
        )
        reader.poll(2.0)
    except BaseException:
        print(worker.log_tail())
        raise
    finally:
        reader.close()
        worker.stop()

    emitted = [decode_action(m.value() or b"").action_id for m in reader.messages]
    assert set(emitted) == expected, f"unexpected: {sorted(set(emitted) - expected)[:5]}"
    duplicates = len(emitted) - len(set(emitted))
    print(
        f"chaos: {len(expected)} actions, {duplicates} duplicates deduped by action_id, "
        f"{KILLS} SIGKILLs"
    )
