"""The worker consumer's fetch timing (`streams._faust_fixes.install_fetch_timing`)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams import Settings
from streams._faust_fixes import install_fetch_timing


def test_the_consumer_fetches_with_the_settings_wait_and_prefetch_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    thread_class: Any = faust_aiokafka.AIOKafkaConsumerThread
    # restored after the test: install_fetch_timing replaces both on the class
    create = thread_class._create_worker_consumer
    monkeypatch.setattr(thread_class, "_create_worker_consumer", create)

    class Consumer:
        """What aiokafka's consumer is to the patch: the fetcher appears when it starts."""

        _fetch_max_wait_ms = 1500
        _fetcher: Any = None

        async def start(self) -> None:
            self._fetcher = SimpleNamespace(_prefetch_backoff=0.1)

    monkeypatch.setattr(
        thread_class, "_polku_original_create", lambda _s, _t: Consumer(), raising=False
    )
    install_fetch_timing(Settings(fetch_max_wait_ms=40, fetch_prefetch_backoff_ms=7))

    consumer = thread_class._create_worker_consumer(object(), object())
    asyncio.run(consumer.start())

    assert consumer._fetch_max_wait_ms == 40
    assert consumer._fetcher._prefetch_backoff == pytest.approx(0.007)


def test_the_prefetch_backoff_defaults_to_aiokafkas() -> None:
    assert Settings().fetch_prefetch_backoff_ms == 100
