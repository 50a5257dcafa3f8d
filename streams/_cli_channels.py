"""`polku` subcommands of the channel side: the HTTP collector and the senders."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    """Add this module's subcommands to the `polku` parser's subparsers."""
    del commands


__all__ = ["argparse", "register"]
