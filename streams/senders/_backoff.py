"""When to try a failed delivery again: exponential backoff, and the provider's Retry-After."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from streams._settings import Settings


@dataclass(frozen=True)
class RetryPolicy:
    """`max_attempts` deliveries in all; between them `initial * 2**(n-1)`, capped at `maximum`,
    shortened by up to `jitter` (a fraction) so senders that failed together retry apart."""

    max_attempts: int = 5
    initial_seconds: float = 1.0
    maximum_seconds: float = 60.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_attempts=settings.sender_max_attempts,
            initial_seconds=settings.sender_backoff_initial_seconds,
            maximum_seconds=settings.sender_backoff_max_seconds,
        )

    def may_retry(self, attempt: int) -> bool:
        """Whether another attempt follows attempt number `attempt` (1-based)."""
        return attempt < self.max_attempts

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after attempt number `attempt` failed.

        A provider's Retry-After wins over the backoff (it knows its own limits), up to
        `maximum_seconds`, so one provider cannot park a sender indefinitely.
        """
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.maximum_seconds)
        exponent = min(max(attempt - 1, 0), 62)  # 2**63 seconds is forever already
        backoff = min(self.initial_seconds * float(2**exponent), self.maximum_seconds)
        return backoff * (1 - self.jitter * self.rng.random())

    def worst_case_seconds(self, per_attempt_timeout: float) -> float:
        """The longest one action can take: every attempt timing out, every wait at its cap."""
        waits = (self.max_attempts - 1) * self.maximum_seconds
        return waits + self.max_attempts * per_attempt_timeout


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None if unusable."""
    if value is None:
        return None
    text = value.strip()
    # RFC 9110 delta-seconds are ASCII digits; str.isdigit() also accepts "¹" or "٣"
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; "-0000" parses as naive
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(seconds, 0.0)
