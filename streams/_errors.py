from __future__ import annotations

from schemas import PolkuError


class ConfigError(PolkuError):
    """The configuration cannot work (missing broker address, bad value)."""


class BrokerError(PolkuError):
    """The Kafka broker could not be started, reached or used as polku needs it."""
