"""Every integration test ends with none of its processes left running."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.harness import stop_leftover_processes


@pytest.fixture(autouse=True)
def _stop_leftover_processes() -> Iterator[None]:
    # a test that fails half-way must not leave a worker running into the next test, where
    # its garbage-collected Popen would turn into a ResourceWarning (an error here)
    yield
    stop_leftover_processes()
