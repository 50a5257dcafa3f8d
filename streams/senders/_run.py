"""Run one sender as a process: signals, metrics endpoint, exit code."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from prometheus_client import start_http_server

from streams._settings import Settings
from streams._topics import ensure_topics
from streams.senders._loop import ChannelSender, SenderLoop
from streams.senders._metrics import SenderMetrics

log = logging.getLogger("polku.sender")


def run_sender(settings: Settings, sender: ChannelSender[Any]) -> int:
    """Consume until SIGTERM or SIGINT, then shut down gracefully; 0 on a clean stop."""
    ensure_topics(settings)
    metrics = SenderMetrics(channels=[sender.channel])
    if settings.metrics_port is not None:
        start_http_server(settings.metrics_port, settings.metrics_host, metrics.registry)
    asyncio.run(_serve(settings, sender, metrics))
    return 0


async def _serve(settings: Settings, sender: ChannelSender[Any], metrics: SenderMetrics) -> None:
    loop = SenderLoop(settings, sender, metrics=metrics)
    running = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(signum, loop.stop)
    log.info("sender %s ready", sender.channel.value)
    await loop.run()
