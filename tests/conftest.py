"""Shared fixtures: one Kafka-protocol broker for the whole test session.

A local Tansu broker is started on 127.0.0.1 unless POLKU_KAFKA_BOOTSTRAP names an external one
(e.g. Apache Kafka), in which case the same tests run against that.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams import broker_bootstrap

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with broker_bootstrap(os.environ.get("POLKU_KAFKA_BOOTSTRAP"), log_path=log) as bootstrap:
        yield bootstrap
