from __future__ import annotations

import pytest

from streams.senders import redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("550 5.1.1 <aino@example.com>: user unknown", "550 5.1.1 <<email>>: user unknown"),
        ("invalid number +358 40 111 0001 for SMS", "invalid number <phone> for SMS"),
        ("HTTP 503: try\n  later", "HTTP 503: try later"),
        ("no personal data: 451 4.7.1", "no personal data: 451 4.7.1"),
        ("call 040-111 0001 or (09) 123 4567", "call <phone> or <phone>"),
    ],
)
def test_addresses_and_numbers_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_long_text_is_cut() -> None:
    assert len(redact("x" * 1000)) == 300
