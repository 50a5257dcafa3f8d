"""Backoff delays and Retry-After parsing."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.senders import RetryPolicy, parse_retry_after

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_delays_double_from_the_initial_up_to_the_maximum_without_jitter() -> None:
    policy = RetryPolicy(max_attempts=10, initial_seconds=1, maximum_seconds=10, jitter=0)
    assert [policy.delay(attempt) for attempt in range(1, 7)] == [1, 2, 4, 8, 10, 10]


@given(attempt=st.integers(min_value=1, max_value=10_000), seed=st.integers())
def test_a_jittered_delay_stays_between_its_bounds(attempt: int, seed: int) -> None:
    policy = RetryPolicy(
        initial_seconds=0.5, maximum_seconds=30, jitter=0.2, rng=random.Random(seed)
    )
    ceiling = min(0.5 * 2 ** min(attempt - 1, 62), 30)
    assert ceiling * 0.8 <= policy.delay(attempt) <= ceiling


def test_retry_after_wins_over_the_backoff_up_to_the_maximum() -> None:
    policy = RetryPolicy(initial_seconds=1, maximum_seconds=60, jitter=0)
    assert policy.delay(1, retry_after=7) == 7
    assert policy.delay(5, retry_after=0) == 0
    assert policy.delay(1, retry_after=3600) == 60


def test_attempts_stop_at_the_maximum() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert [policy.may_retry(attempt) for attempt in (1, 2, 3, 4)] == [True, True, False, False]


def test_the_worst_case_counts_every_wait_and_every_timeout() -> None:
    policy = RetryPolicy(max_attempts=3, maximum_seconds=10)
    assert policy.worst_case_seconds(per_attempt_timeout=5) == 2 * 10 + 3 * 5


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("1", 1.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
        ("Mon, 23 Nov 2026 12:00:45 GMT", 45.0),
        (format_datetime(NOW - timedelta(minutes=5), usegmt=True), 0.0),  # in the past: now
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds


@given(st.text(max_size=40))
def test_parse_retry_after_never_raises(header: str) -> None:
    parsed = parse_retry_after(header, NOW)
    assert parsed is None or parsed >= 0
