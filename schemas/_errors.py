"""The root of polku's exceptions; every package's errors derive from it."""

from __future__ import annotations


class PolkuError(Exception):
    """Base class of every error polku raises on purpose."""


class InvalidEventError(PolkuError):
    """Bytes that are not a valid touchpoint event; `reason` says why, `raw` keeps the bytes."""

    def __init__(self, reason: str, raw: bytes) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw
