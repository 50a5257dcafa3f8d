"""Deterministic buckets and wall-clock arithmetic shared by the engine and the policy."""

from __future__ import annotations

import hashlib
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

BUCKETS = 10_000


def bucket(*parts: str) -> int:
    """A deterministic bucket in [0, 10000) for holdouts and splits: same customer, same bucket."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def next_time_of_day(now: datetime, at: str, zone: ZoneInfo) -> datetime:
    """The next moment after `now` when the wall clock in `zone` shows `at` (HH:MM).

    Wall-clock arithmetic, so a DST change in between keeps the local time; a time that does
    not exist that day (the spring-forward gap) resolves as zoneinfo's fold=0 does.
    """
    hours, minutes = (int(part) for part in at.split(":"))
    local_now = now.astimezone(zone)
    candidate = datetime.combine(local_now.date(), time(hours, minutes), tzinfo=zone)
    if candidate <= local_now:
        candidate = datetime.combine(
            local_now.date() + timedelta(days=1), time(hours, minutes), tzinfo=zone
        )
    return candidate.astimezone(now.tzinfo)
