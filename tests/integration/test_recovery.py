"""Every pending timer comes back after SIGKILL, also when the changelog was written in batches.

Tansu's ListOffsets("latest") answers the start of the last record batch + 1, not the end of
the partition. Faust's changelog recovery took its highwater from there, so a changelog whose
last batch held several records was restored short (timers silently lost on an empty disk) or
crashed the worker (persisted offset beyond the "highwater" on a kept disk). Many customers'
carts at once make the worker write its changelogs in multi-record batches.
"""

from __future__ import annotations

import re
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas import CartAbandoned, CartPayload, CustomerRef, LineItem, SourceChannel
from streams import TouchpointProducer
from tests.integration.harness import WorkerProcess, committed_offset, isolated_settings

pytestmark = pytest.mark.integration

CUSTOMERS = 60
TIMEOUT = 90.0


def _pending_timers(worker: WorkerProcess) -> float | None:
    try:
        metrics = worker.metrics()
    except OSError:
        return None
    found = re.search(r"^polku_timers_pending (\S+)$", metrics, re.MULTILINE)
    return float(found.group(1)) if found else None


def _wait(condition: object, what: str, worker: WorkerProcess) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():  # type: ignore[operator]
        assert worker.process is not None
        assert worker.process.poll() is None, (
            f"worker died waiting for {what}:\n{worker.log_tail()}"
        )
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{worker.log_tail()}"
        time.sleep(0.2)


@pytest.mark.parametrize("local_state", ["kept", "lost"])
def test_every_pending_timer_is_restored(
    kafka_bootstrap: str, tmp_path: Path, local_state: str
) -> None:
    # the library's abandoned-cart journey waits an hour: every timer stays pending
    settings = isolated_settings(kafka_bootstrap, tmp_path / "data", journeys_dir=None)
    first = WorkerProcess(settings, tmp_path / "first.log").start()
    second: WorkerProcess | None = None
    try:
        producer = TouchpointProducer(settings)
        for n in range(CUSTOMERS):
            producer.send(
                CartAbandoned(
                    event_id=f"cart-{n}",
                    occurred_at=datetime.now(UTC),
                    channel=SourceChannel.WEB,
                    customer=CustomerRef(customer_id=f"r-{n}"),
                    payload=CartPayload(cart_id=f"k{n}", items=[LineItem(sku="s", name="Shoe")]),
                )
            )
        assert producer.close() == CUSTOMERS
        _wait(
            lambda: committed_offset(settings, settings.touchpoints_topic) >= CUSTOMERS,
            "the carts to be committed",
            first,
        )
        _wait(lambda: _pending_timers(first) == CUSTOMERS, f"{CUSTOMERS} pending timers", first)
        time.sleep(1.5)  # let the changelog writes of the last events be acked
        first.kill()
        if local_state == "lost":
            shutil.rmtree(settings.data_dir)

        second = WorkerProcess(settings, tmp_path / "second.log").start()
        _wait(lambda: _pending_timers(second) == CUSTOMERS, f"{CUSTOMERS} timers restored", second)
    finally:
        first.stop()
        if second is not None:
            second.stop()
